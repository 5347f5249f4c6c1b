"""proxmoxer's quirks and every failure the API backend must turn into one clear line."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from proxmoxer import ResourceException

from pverep.apiconfig import ApiSettings
from pverep.cluster.api import ApiAuthError, ApiCluster, ApiConnectionError, MalformedAnswerError
from pverep.cluster.base import ClusterError, NodeOfflineError
from pverep.lab import gentree, tlscerts

from .conftest import NODES, FakeCluster


def test_booleans_go_out_as_1_and_0(fake_cluster: FakeCluster) -> None:
    api = fake_cluster.api_cluster()
    # Raw proxmoxer sends str(True) = "True", which PVE's HTTP validator rejects ...
    with pytest.raises(ResourceException) as raw:
        api.client.nodes("pve1").qemu(109).config.get(current=True)
    assert raw.value.status_code == 400
    # ... the backend sends 1: the current (not pending-applied) values come back.
    data = api.call("GET", "/nodes/pve1/qemu/109/config", current=True)
    assert "scsi2" not in data and "cores" in data
    assert "scsi2" in api.call("GET", "/nodes/pve1/qemu/109/config", current=False)


def test_offline_node_595(fake_cluster: FakeCluster) -> None:
    gentree.write_members(fake_cluster.paths, "pve1", NODES, offline=["pve2"])
    api = fake_cluster.api_cluster()
    on_pve2 = next(v for v, g in api.vmlist().items() if g.node == "pve2")
    with pytest.raises(NodeOfflineError, match=r"^node 'pve2' is offline or unreachable \(595"):
        api.guest_config(on_pve2)
    assert [m.online for m in api.members().values()] == [True, False, True]


def test_wrong_token(fake_cluster: FakeCluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-secret\n")
    bad.chmod(0o600)
    api = fake_cluster.api_cluster(secret_file=str(bad))
    with pytest.raises(ApiAuthError, match=r"authentication failed for 'root@pam!pverep'.*token"):
        api.vmlist()


def test_password_login_and_expired_ticket_is_renewed(fake_cluster: FakeCluster) -> None:
    now = [1_800_000_000.0]
    fake_cluster.api.clock = lambda: now[0]
    api = fake_cluster.api_cluster(
        token=None, user="root@pam", secret_file=str(fake_cluster.password_file)
    )
    assert api.local_node() == "pve1"
    now[0] += 3 * 3600  # the server-side ticket lifetime (2 h) is over
    assert len(api.vmlist()) == 12
    logins = [p for m, p in fake_cluster.api.requests if p == "/access/ticket"]
    assert len(logins) == 2


def test_expired_ticket_with_changed_password(fake_cluster: FakeCluster) -> None:
    now = [1_800_000_000.0]
    fake_cluster.api.clock = lambda: now[0]
    api = fake_cluster.api_cluster(
        token=None, user="root@pam", secret_file=str(fake_cluster.password_file)
    )
    api.members()
    fake_cluster.api._users.clear()
    now[0] += 3 * 3600
    with pytest.raises(ApiAuthError, match=r"^API authentication failed for 'root@pam'"):
        api.vmlist()


def test_wrong_password(fake_cluster: FakeCluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad-pw"
    bad.write_text("wrong\n")
    bad.chmod(0o600)
    api = fake_cluster.api_cluster(token=None, user="root@pam", secret_file=str(bad))
    with pytest.raises(ApiAuthError, match=r"^API authentication failed for 'root@pam' at .*401"):
        api.vmlist()


def test_unreachable_host(fake_cluster: FakeCluster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = fake_cluster.api_cluster(host=f"127.0.0.1:{port}")
    with pytest.raises(
        ApiConnectionError, match=rf"^cannot reach API at 127.0.0.1:{port}: connection refused$"
    ):
        api.vmlist()


def test_timeout(fake_cluster: FakeCluster) -> None:
    fake_cluster.api.faults["/cluster/resources"] = "slow1.5"
    api = fake_cluster.api_cluster(timeout=0.3)
    with pytest.raises(ApiConnectionError, match=r"timed out after 0.3 s$"):
        api.vmlist()


def test_tls_untrusted_certificate(fake_cluster: FakeCluster) -> None:
    api = fake_cluster.api_cluster(ca_file=None)
    with pytest.raises(
        ApiConnectionError, match=r"^TLS verification of .* failed \(untrusted certificate\)$"
    ):
        api.vmlist()


def test_tls_fingerprint_pinning(fake_cluster: FakeCluster) -> None:
    cert = fake_cluster.paths.node_dir("pve1") / "pve-ssl.pem"
    good = tlscerts.fingerprint(cert)
    assert len(fake_cluster.api_cluster(ca_file=None, fingerprint=good).vmlist()) == 12
    bad = ":".join(["AB"] * 32)
    api = fake_cluster.api_cluster(ca_file=None, fingerprint=bad)
    with pytest.raises(ApiConnectionError, match="does not match the pinned fingerprint"):
        api.vmlist()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("garbage", "not JSON"),
        ("nodata", "no data envelope"),
        ("shape", "expected a list"),
        ("500", "internal error"),
    ],
)
def test_malformed_answers(fake_cluster: FakeCluster, fault: str, message: str) -> None:
    fake_cluster.api.faults["/cluster/resources"] = fault
    with pytest.raises(ClusterError, match=message) as err:
        fake_cluster.api_cluster().vmlist()
    assert "\n" not in str(err.value)
    if fault != "500":
        assert isinstance(err.value, MalformedAnswerError)


def test_missing_field_is_malformed(fake_cluster: FakeCluster) -> None:
    fake_cluster.api.faults["/cluster/status"] = "shape"
    with pytest.raises(MalformedAnswerError, match=r"GET /cluster/status: expected a list"):
        fake_cluster.api_cluster().members()


# --- the CLI backends (pvesh through proxmoxer's local backend, a fake pvesh on PATH) ---


@pytest.fixture
def local_api(
    fake_cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ApiCluster:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pvesh = bindir / "pvesh"
    pvesh.write_text(
        f"#!{sys.executable}\nfrom pverep.lab.fakepvesh import main\nraise SystemExit(main())\n"
    )
    pvesh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PVEREP_ROOT", str(fake_cluster.paths.root))
    monkeypatch.setattr(socket, "gethostname", lambda: "pve1")
    monkeypatch.setenv("PVEREP_FAKEPVESH_NODE", "pve1")  # the pvesh fake runs as a process
    roots = ",".join(f"{n}={tmp_path / 'nodes' / n}" for n in NODES[1:])
    monkeypatch.setenv("PVEREP_FAKEPVESH_PEERS", roots)
    return ApiCluster(ApiSettings(backend="local", timeout=20).validate())


def test_local_backend_agrees_with_files(fake_cluster: FakeCluster, local_api: ApiCluster) -> None:
    files = fake_cluster.files_cluster()
    assert local_api.vmlist() == files.vmlist()
    assert local_api.guest_config(102) == files.guest_config(102)
    assert local_api.storages() == files.storages()


def test_local_backend_warning_with_exit_0_is_success(
    fake_cluster: FakeCluster, local_api: ApiCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVEREP_FAKEPVESH_WARN", "WARN: storage plugin 'x' is deprecated")
    # proxmoxer itself reports this as a 500 with exit_code 0 ...
    with pytest.raises(ResourceException) as raw:
        local_api.client.cluster.resources.get(type="vm")
    assert raw.value.status_code == 500 and raw.value.exit_code == 0
    assert json.loads(raw.value.content)
    # ... the backend takes the answer.
    assert local_api.vmlist() == fake_cluster.files_cluster().vmlist()


def test_local_backend_null_result(local_api: ApiCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVEREP_FAKEPVESH_FAULT", "/version=null")
    assert local_api.client.version.get() == {"errors": ""}
    assert local_api.call("GET", "/version") is None


def test_local_backend_errors(local_api: ApiCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ClusterError, match=r"^Configuration file 'nodes/pve1/lxc/100.conf' does not exist$"
    ):
        local_api.call("GET", "/nodes/pve1/lxc/100/config")
    monkeypatch.setenv("PVEREP_FAKEPVESH_FAULT", "/cluster/resources=garbage")
    with pytest.raises(MalformedAnswerError):
        local_api.vmlist()
    monkeypatch.setenv("PVEREP_FAKEPVESH_FAULT", "/nodes/pve2/qemu/101/config=offline")
    with pytest.raises(NodeOfflineError, match=r"^node 'pve2' is offline"):
        local_api.call("GET", "/nodes/pve2/qemu/101/config")


def test_missing_pvesh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    api = ApiCluster(ApiSettings(backend="local").validate())
    with pytest.raises(ClusterError, match=r"^cannot run 'pvesh': not installed$"):
        api.vmlist()


# --- the openssh backend (end to end on the lab: tests/lab/test_api_openssh.py) ---


def test_openssh_backend_without_its_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openssh_wrapper", None)  # import fails as if missing
    api = ApiCluster(ApiSettings(backend="openssh", host="pve2").validate())
    with pytest.raises(ClusterError) as err:
        api.vmlist()
    assert str(err.value).startswith(
        "the openssh API backend needs the Python module 'openssh_wrapper' ("
    )
    assert "\n" not in str(err.value)


def test_openssh_backend_bad_host_is_one_line() -> None:
    api = ApiCluster(ApiSettings(backend="openssh", host="pve2:22").validate())
    with pytest.raises(ClusterError, match=r"^API configuration: .*illegal symbols$"):
        api.vmlist()


def test_openssh_exit_255_is_told_apart() -> None:
    api = ApiCluster(ApiSettings(backend="openssh", host="pve2").validate())
    with pytest.raises(ApiConnectionError, match=r"^cannot reach pve2 over ssh: ssh: connect"):
        api._ssh_error("GET", "/version", "ssh: connect to host pve2 port 22: No route to host")
    with pytest.raises(NodeOfflineError, match=r"^node 'pve3' is offline"):
        api._ssh_error("GET", "/nodes/pve3/qemu", "595 No route to host")
    with pytest.raises(ClusterError, match=r"^no such replication job '1-0'$"):
        api._ssh_error("GET", "/cluster/replication/1-0", "no such replication job '1-0'")
