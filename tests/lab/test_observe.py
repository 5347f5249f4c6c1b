"""Observability on the lab: the run history of real runs, the metrics, and a real Prometheus
server (Debian's ``prometheus``) scraping ``pverep exporter`` on a lab node."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pverep.lab import guests
from pverep.lab.control import Lab

from .replhelp import delete_jobs_of, job_log, pverep, run_job, state

EXPORTER_PORT = 9737


@pytest.fixture
def guest(lab: Lab, vmid: int) -> Iterator[int]:
    created = guests.create(lab, vmid, "pve1", "lxc", ["64M"])
    assert created.volumes == (f"subvol-{vmid}-disk-0",)
    guests.write(lab, vmid, 1_000_000)
    yield vmid
    delete_jobs_of(lab, vmid)


def _history(lab: Lab, vmid: int) -> list[dict[str, object]]:
    out = pverep(lab, "pve1", "history", "--guest", str(vmid), "--output-format", "json").stdout
    return json.loads(out)


def _copied(lines: list[str]) -> int:
    """The byte count of the transfer's closing line in the job log."""
    counts = [int(m[1]) for ln in lines if (m := re.search(r": (\d+) bytes \(.*\) copied, ", ln))]
    return counts[-1]


def test_history_records_what_the_runs_did(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    volid = f"local-zfs:subvol-{vmid}-disk-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--schedule", "*/5")
    run_job(lab, "pve1", job)
    full_bytes = _copied(job_log(lab, "pve1", job))
    first_sync = state(lab, "pve1")[str(vmid)]["local/pve2"]["last_sync"]
    guests.write(lab, vmid, 300_000)
    run_job(lab, "pve1", job)
    incr_bytes = _copied(job_log(lab, "pve1", job))

    runs = _history(lab, vmid)
    assert [r["result"] for r in runs] == ["ok", "ok"]
    assert [[v["mode"] for v in r["volumes"]] for r in runs] == [["full"], ["incremental"]]
    assert [r["bytes"] for r in runs] == [full_bytes, incr_bytes]
    assert full_bytes > 1_000_000 and 300_000 < incr_bytes < full_bytes
    assert runs[1]["volumes"][0]["base"] == f"__replicate_{job}_{first_sync}__"
    assert runs[0]["volumes"][0]["volid"] == volid
    assert runs[0]["start"] == pytest.approx(first_sync, abs=2)

    # a failing run is recorded with its error (the source volume is gone)
    dataset = guests.dataset(f"subvol-{vmid}-disk-0")
    lab.exec("pve1", ["zfs", "destroy", "-r", dataset], check=True)
    res = run_job(lab, "pve1", job, check=False)
    assert res.returncode != 0
    last = _history(lab, vmid)[-1]
    assert last["result"] == "error" and last["error"] and last["error"] in res.stderr

    # the report draws from the same history: 3 runs, 1 failure with its error
    out = pverep(lab, "pve1", "report", "--html", f"/tmp/report-{vmid}.html").stdout
    assert out.startswith(f"wrote /tmp/report-{vmid}.html (")
    page = lab.exec("pve1", ["cat", f"/tmp/report-{vmid}.html"], check=True).stdout
    section = page.split(f'<h2 id="guest-{vmid}">', 1)[1].split("<h2", 1)[0]
    assert "3 runs" in section and "1 failed" in section and section.count('class="failure"') == 1
    assert f"{full_bytes + incr_bytes} bytes sent" in section

    # and the metrics show the job
    metrics = pverep(lab, "pve1", "metrics").stdout
    labels = f'{{jobid="{job}",guest="{vmid}",target="pve2"}}'
    assert f"pverep_job_consecutive_failures{labels} 1\n" in metrics
    assert f"pverep_job_last_sync_timestamp_seconds{labels} " in metrics
    assert f"pverep_job_last_run_bytes{labels} 0\n" in metrics  # the failed run sent nothing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.loads(resp.read())
    assert data["status"] == "success"
    return list(data["data"]["result"])


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian package prometheus missing")
def test_prometheus_scrapes_the_exporter(lab: Lab, guest: int) -> None:
    vmid, job = guest, f"{guest}-0"
    pverep(lab, "pve1", "create-local-job", job, "pve2", "--schedule", "*/10")
    run_job(lab, "pve1", job)
    last_sync = state(lab, "pve1")[str(vmid)]["local/pve2"]["last_sync"]
    listen = f"{lab.node_ip('pve1')}:{EXPORTER_PORT}"
    # the constant script prints the exporter's pid in the node's namespace, then becomes it
    exporter = lab.popen(
        "pve1",
        ["sh", "-c", 'echo "$$" && exec "$@"', "sh", "pverep", "exporter", "--listen", listen],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert exporter.stdout is not None
    node_pid = exporter.stdout.readline().strip()
    prom_port = _free_port()
    with tempfile.TemporaryDirectory(prefix="pverep-prom-") as tmp:
        conf = Path(tmp) / "prometheus.yml"
        conf.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: pverep\n    static_configs: [{{targets: ['{listen}']}}]\n"
        )
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={conf}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            expr = f'pverep_job_last_sync_timestamp_seconds{{jobid="{job}"}}'
            found: list[dict[str, object]] = []
            deadline = time.monotonic() + 60
            while not found and time.monotonic() < deadline:
                time.sleep(1)
                try:
                    found = _query(prom_port, expr)
                except OSError:
                    continue  # Prometheus still starting
            assert found, "Prometheus never saw the job"
            [sample] = found
            metric = sample["metric"]
            assert isinstance(metric, dict)
            assert (metric["guest"], metric["target"], metric["instance"]) == (
                str(vmid),
                "pve2",
                listen,
            )
            value = sample["value"]
            assert isinstance(value, list) and float(value[1]) == last_sync
            up = _query(prom_port, f'up{{instance="{listen}"}}')
            assert up and up[0]["value"][1] == "1"  # type: ignore[index]
            interval = _query(prom_port, f'pverep_job_schedule_interval_seconds{{jobid="{job}"}}')
            assert float(interval[0]["value"][1]) == 600  # type: ignore[index]
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            lab.exec("pve1", ["kill", node_pid])
            exporter.wait(timeout=30)
            exporter.stdout.close()
