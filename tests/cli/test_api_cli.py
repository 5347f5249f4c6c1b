"""``pverep --api …`` against the fake Proxmox API: same output as the files backend on the
node, and one-line errors (never a traceback) for every failure."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pverep.cli import main
from pverep.lab import gentree
from tests.unit.cluster.conftest import NODES, TOKEN_ID, FakeCluster


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        rc = 0
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def api_args(fake: FakeCluster, tmp_path: Path, **over: str) -> list[str]:
    opts = {
        "--api": fake.server.endpoint,
        "--api-token": TOKEN_ID,
        "--api-secret-file": str(fake.token_file),
        "--api-ca-file": str(fake.ca_file),
    }
    opts.update(over)
    args = ["--root", str(tmp_path / "client")]  # no /etc/pverep of the host
    for key, value in opts.items():
        if value:
            args += [key, value]
    return args


def local_args(fake: FakeCluster) -> list[str]:
    return ["--root", str(fake.paths.root)]


@pytest.fixture(autouse=True)
def _node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "pve1")
    for var in ("PVEREP_API", "PVEREP_API_BACKEND", "PVEREP_ROOT"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    "verb",
    [
        ["status"],
        ["list"],
        ["read", "100-1"],
        ["guests"],
        ["guests", "--node", "pve2"],
        ["status", "--guest", "106"],
        ["status", "--output-format", "json"],
        ["guests", "--output-format", "json"],
    ],
)
def test_same_output_as_on_the_node(
    fake_cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: list[str]
) -> None:
    rc_local, local, err_local = run(capsys, local_args(fake_cluster) + verb)
    rc_api, remote, err_api = run(capsys, api_args(fake_cluster, tmp_path) + verb)
    assert (rc_local, err_local) == (0, "")
    assert (rc_api, err_api) == (0, "")
    assert remote == local
    assert len(local) > 80  # a real answer, not an empty table


def test_guests_lists_volumes_and_jobs(
    fake_cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(
        capsys, [*api_args(fake_cluster, tmp_path), "guests", "--output-format", "json"]
    )
    guests = {g["vmid"]: g for g in json.loads(out)}
    assert rc == 0 and len(guests) == 12
    assert guests[100]["jobs"] == ["100-0", "100-1"]
    assert guests[100]["volumes"] == ["local-zfs:vm-100-disk-0", "local-zfs:vm-100-disk-2"]
    assert guests[103]["type"] == "lxc" and guests[103]["node"] == "pve1"


def test_job_control_through_the_api(
    fake_cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = api_args(fake_cluster, tmp_path)
    assert run(capsys, [*api, "create-local-job", "109-2", "pve2", "--schedule", "*/10"])[0] == 0
    assert run(capsys, [*api, "disable", "109-2"])[0] == 0
    rc, out, _ = run(capsys, [*local_args(fake_cluster), "read", "109-2"])
    job = json.loads(out)
    assert (job["target"], job["schedule"], job["disable"], job["source"]) == (
        "pve2",
        "*/10",
        1,
        "pve1",
    )
    assert run(capsys, [*api, "enable", "109-2"])[0] == 0
    assert run(capsys, [*api, "update", "109-2", "--rate", "20", "--delete", "schedule"])[0] == 0
    rc, out, _ = run(capsys, [*local_args(fake_cluster), "read", "109-2"])
    assert json.loads(out)["rate"] == 20 and "schedule" not in json.loads(out)
    assert run(capsys, [*api, "schedule-now", "109-2"])[0] == 0
    rc, _, err = run(capsys, [*api, "delete", "109-2"])
    assert rc == 0 and "background task" in err
    rc, out, _ = run(capsys, [*local_args(fake_cluster), "list"])
    assert "109-2" in out
    assert run(capsys, [*api, "delete", "109-2", "--force"])[0] == 0
    rc, out, _ = run(capsys, [*local_args(fake_cluster), "list"])
    assert "109-2" not in out


def test_same_errors_as_on_the_node(
    fake_cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb in (
        ["create-local-job", "100-7", "pve1"],
        ["update", "100-0", "--rate", "0.5"],
        ["delete", "100-0", "--keep", "--force"],
        ["read", "777-0"],
        ["update", "100-0", "--digest", "0" * 40, "--rate", "2"],
    ):
        local = run(capsys, local_args(fake_cluster) + verb)
        remote = run(capsys, api_args(fake_cluster, tmp_path) + verb)
        assert remote == local, verb
        assert local[0] == 255 and local[2].count("\n") == 1


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], pattern: str) -> None:
    rc, out, err = run(capsys, argv)
    assert rc == 255 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert pattern in err, err


def test_failures_are_one_line(
    fake_cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("nope\n")
    bad.chmod(0o600)
    loose = tmp_path / "loose"
    loose.write_text("secret\n")
    loose.chmod(0o644)
    fake = fake_cluster
    _one_line_error(
        capsys,
        [*api_args(fake, tmp_path, **{"--api-secret-file": str(bad)}), "status"],
        "API authentication failed for 'root@pam!pverep': invalid token value!",
    )
    _one_line_error(
        capsys,
        [*api_args(fake, tmp_path, **{"--api-secret-file": str(loose)}), "list"],
        "has mode 0644; it must not be accessible by group or others",
    )
    _one_line_error(
        capsys,
        [*api_args(fake, tmp_path, **{"--api": "127.0.0.1:1"}), "list"],
        "cannot reach API at 127.0.0.1:1: connection refused",
    )
    _one_line_error(
        capsys, [*api_args(fake, tmp_path, **{"--api-ca-file": ""}), "list"], "TLS verification of"
    )
    _one_line_error(
        capsys,
        [
            *api_args(
                fake, tmp_path, **{"--api-fingerprint": ":".join(["00"] * 32), "--api-ca-file": ""}
            ),
            "list",
        ],
        "does not match the pinned fingerprint",
    )
    _one_line_error(
        capsys,
        [*api_args(fake, tmp_path, **{"--api-token": "root@pam"}), "list"],
        "invalid API token id 'root@pam'",
    )
    fake.api.faults["/cluster/replication"] = "garbage"
    _one_line_error(
        capsys,
        [*api_args(fake, tmp_path), "list"],
        "malformed API answer to GET /cluster/replication: not JSON",
    )
    fake.api.faults.clear()
    gentree.write_members(fake.paths, "pve1", NODES, offline=["pve3"])
    _one_line_error(
        capsys,
        [*api_args(fake, tmp_path), "guests"],
        "node 'pve3' is offline or unreachable (595 No route to host)",
    )


def test_config_file_and_environment(
    fake_cluster: FakeCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "client"
    conf = root / "etc/pverep/pverep.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "[api]\n"
        f"host = {fake_cluster.server.endpoint}\n"
        f"token = {TOKEN_ID}\n"
        f"ca_file = {fake_cluster.ca_file}\n"
        "timeout = 12\n"
    )
    monkeypatch.setenv("PVEREP_API_SECRET_FILE", str(fake_cluster.token_file))
    rc_api, remote, _ = run(capsys, ["--root", str(root), "list"])
    rc, local, _ = run(capsys, [*local_args(fake_cluster), "list"])
    assert rc_api == rc == 0 and remote == local
    conf.write_text("[api]\npassword = hunter2\n")
    _one_line_error(capsys, ["--root", str(root), "list"], "put secrets in a 0600 file")
