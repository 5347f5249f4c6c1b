"""metrics / history / health / report / exporter against a node under a temporary root."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pverep.observe.exporter import make_server
from pverep.observe.history import History, RunRecord
from tests.cli import test_jobs_cli
from tests.cli.test_jobs_cli import NOW, Node

node = test_jobs_cli.node  # the fixture, shared

CFG = "local: 100-0\n\ttarget pve2\n\tschedule */15\n\tsource pve1\n\n"


def _state(node: Node, last_sync: int, fail_count: int = 0, error: str | None = None) -> None:
    entry: dict[str, object] = {
        "last_iteration": last_sync,
        "last_try": max(last_sync, NOW - 60),
        "last_sync": last_sync,
        "fail_count": fail_count,
        "duration": 2.5,
    }
    if error:
        entry["error"] = error
    node.paths.state_file.parent.mkdir(parents=True, exist_ok=True)
    node.paths.state_file.write_text(json.dumps({"100": {"local/pve2": entry}}))


@pytest.fixture
def job(node: Node) -> Node:
    node.paths.replication_cfg.write_text(CFG)
    _state(node, NOW - 600)
    History(node.paths.history_file).append(
        RunRecord(
            "100-0",
            100,
            "pve2",
            "pve1",
            NOW - 600.0,
            NOW - 597.5,
            "ok",
            None,
            ({"volid": "local-zfs:vm-100-disk-0", "mode": "incremental", "bytes": 8192},),
        )
    )
    return node


def _values(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


LAB = '{jobid="100-0",guest="100",target="pve2"}'


def test_metrics_print_and_textfile(job: Node, capsys, tmp_path: Path) -> None:
    code, out, err = job.run(capsys, "metrics")
    assert (code, err) == (0, "")
    values = _values(out)
    assert values[f"pverep_job_rpo_seconds{LAB}"] == 600
    assert values[f"pverep_job_last_run_bytes{LAB}"] == 8192
    assert values[f"pverep_job_last_duration_seconds{LAB}"] == 2.5
    assert values['pverep_job_state{jobid="100-0",guest="100",target="pve2",state="ok"}'] == 1
    code, path, _ = job.run(capsys, "metrics", "--textfile", str(tmp_path / "collector"))
    assert code == 0
    assert Path(path.strip()).read_text() == out
    assert [p.name for p in (tmp_path / "collector").iterdir()] == ["pverep.prom"]


def test_history_filters_and_formats(job: Node, capsys) -> None:
    code, out, _ = job.run(capsys, "history", "--guest", "100", "--output-format", "json")
    assert code == 0
    [rec] = json.loads(out)
    assert (rec["jobid"], rec["bytes"], rec["result"]) == ("100-0", 8192, "ok")
    assert (
        json.loads(job.run(capsys, "history", "--guest", "101", "--output-format", "json")[1]) == []
    )
    assert (
        json.loads(job.run(capsys, "history", "--since", "5m", "--output-format", "json")[1]) == []
    )
    code, out, _ = job.run(capsys, "history")
    assert "100-0" in out and "incremental" in out and "8192" in out
    code, _, err = job.run(capsys, "history", "--since", "yesterday")
    assert code == 255 and err.startswith("invalid time 'yesterday'") and err.count("\n") == 1
    code, _, err = job.run(capsys, "history", "--guest", "abc")
    assert code == 255 and err.count("\n") == 1


def test_health_exit_codes_follow_nagios(job: Node, capsys) -> None:
    code, out, _ = job.run(capsys, "health")
    assert code == 0 and out.startswith("REPLICATION OK - 1 guests, 0 not OK")
    _state(job, NOW - 2000)  # 2.2 times the */15 interval
    code, out, _ = job.run(capsys, "health")
    assert code == 1 and "WARNING  guest 100 on pve1" in out
    _state(job, NOW - 4000, 3, "no route to host")
    code, out, _ = job.run(capsys, "health", "--output-format", "json")
    data = json.loads(out)
    assert code == 2 and data["status"] == "CRITICAL"
    assert data["guests"][0]["jobs"][0]["error"] == "no route to host"
    code, out, _ = job.run(capsys, "health", "--warn", "2h", "--crit", "3h")
    assert code == 1  # RPO 4000 s is fine against hours, but the job is failing
    code, _, err = job.run(capsys, "health", "--warn", "often")
    assert code == 255 and "invalid threshold" in err


def test_report_writes_one_self_contained_page(job: Node, capsys, tmp_path: Path) -> None:
    out_file = tmp_path / "report.html"
    code, out, _ = job.run(capsys, "report", "--html", str(out_file))
    assert code == 0 and out == f"wrote {out_file} (1 runs)\n"
    page = out_file.read_text()
    assert "guest 100" in page and "<svg" in page and "8192 bytes sent" in page


def test_exporter_serves_what_metrics_prints(job: Node, capsys) -> None:
    _, expected, _ = job.run(capsys, "metrics")
    from pverep.observe import collect

    server = make_server("127.0.0.1:0", lambda: collect.metrics_text(job.paths, NOW))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
            ctype = resp.headers["Content-Type"]
        assert body == expected
        assert ctype.startswith("text/plain; version=0.0.4")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://{host}:{port}/other", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_exporter_refuses_a_bad_listen_address(job: Node, capsys) -> None:
    code, _, err = job.run(capsys, "exporter", "--listen", "somewhere")
    assert code == 255 and err == "invalid listen address 'somewhere' (ADDR:PORT)\n"
    code, _, err = job.run(capsys, "exporter", "--listen", "example:80")
    assert code == 255 and "an IP address" in err


def test_after_run_writes_the_configured_textfile(job: Node, capsys) -> None:
    from pverep.observe import hooks

    job.paths.pverep_conf.parent.mkdir(parents=True, exist_ok=True)
    job.paths.pverep_conf.write_text("[observe]\ntextfile_dir = /var/lib/node-exporter\n")
    warnings: list[str] = []
    hooks.after_run(job.paths, clock=lambda: NOW, warn=warnings.append)(12.25)
    prom = (job.paths.root / "var/lib/node-exporter/pverep.prom").read_text()
    values = _values(prom)
    assert values['pverep_node_last_cycle_duration_seconds{node="pve1"}'] == 12.25
    assert values['pverep_node_last_cycle_timestamp_seconds{node="pve1"}'] == NOW
    assert values[f"pverep_job_rpo_seconds{LAB}"] == 600
    assert warnings == []
    # a bad setting is a warning for the run, a one-line error for the verbs
    job.paths.pverep_conf.write_text("[observe]\ntextfile_dir = relative/dir\n")
    hooks.after_run(job.paths, clock=lambda: NOW, warn=warnings.append)(1.0)
    assert len(warnings) == 1 and "an absolute path" in warnings[0]
    code, _, err = job.run(capsys, "history")
    assert code == 255 and err.count("\n") == 1 and "textfile_dir" in err
