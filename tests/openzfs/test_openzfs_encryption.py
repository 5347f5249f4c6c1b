"""An encrypted guest disk between two pverep nodes on real OpenZFS 2.3 (issue 10.3).

A VM on pve1 has a plain zvol and one created with native encryption (passphrase, key
loaded). Replicated to pve2, full then incremental: the encrypted disk goes raw (``zfs send
-w``, no ``-x encryption`` on the receive), so the replica on pve2 is encrypted with the
source's key, is its own encryption root, and its key is not loaded there; the plain disk
goes as before. Snapshot guids are equal; after ``zfs load-key`` on pve2 the content digest
equals pve1's. Every ``zfs send``/``zfs recv`` argv both nodes run is recorded by a wrapper
in front of ``zfs`` on their PATH (``/run/pvelab/bin``, node-private).

Checked to fail when the engine does not see the disk as encrypted: the plain ``zfs send -pv``
of an encrypted dataset is refused by OpenZFS 2.3 (properties without ``-w``), the run fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pverep.lab import guests
from pverep.lab.clusterfs import NODE_RUN
from pverep.lab.control import Lab
from tests.lab.replhelp import delete_jobs_of, job_log, pverep, run_job
from tests.lab.test_target_streams import STORE
from tests.openzfs.test_openzfs_replication import repl_guids

PASSPHRASE = "pverep-lab-passphrase\n"
WRAPPER = f"{NODE_RUN}/bin/zfs"
RECORD = f"{NODE_RUN}/zfs-streams.log"
#: records the stream commands (one line of argv each), then runs the real zfs
WRAPPER_TEXT = (
    "#!/bin/sh\n# records zfs send/recv argv for test_openzfs_encryption, then the real zfs\n"
    f'case "$1" in send|recv|receive) printf \'%s\\n\' "$*" >> {RECORD};; esac\n'
    'exec /usr/sbin/zfs "$@"\n'
)


@pytest.fixture
def recorded_streams(lab: Lab) -> Iterator[None]:
    for node in ("pve1", "pve2"):
        lab.exec(node, ["tee", WRAPPER], input=WRAPPER_TEXT, check=True)
        lab.exec(node, ["chmod", "0755", WRAPPER], check=True)
        lab.exec(node, ["rm", "-f", RECORD], check=True)
    try:
        yield
    finally:
        for node in ("pve1", "pve2"):
            lab.exec(node, ["rm", "-f", WRAPPER, RECORD])


def streams(lab: Lab, node: str) -> list[str]:
    """The recorded send/recv lines since the last call (then forgotten)."""
    res = lab.exec(node, ["sh", "-c", f"cat {RECORD} 2>/dev/null; rm -f {RECORD}"], check=True)
    return res.stdout.splitlines()


def props(lab: Lab, node: str, ds: str) -> dict[str, str]:
    names = "encryption,encryptionroot,keystatus,keyformat"
    out = lab.exec(node, ["zfs", "get", "-H", "-o", "property,value", names, ds], check=True)
    return dict(line.split("\t", 1) for line in out.stdout.splitlines())


def test_encrypted_zvol_goes_raw_and_stays_encrypted(
    lab: Lab, vmid: int, recorded_streams: None
) -> None:
    job = f"{vmid}-0"
    plain, secret = f"vm-{vmid}-disk-0", f"vm-{vmid}-disk-1"
    plain_ds, secret_ds = guests.dataset(plain), guests.dataset(secret)
    guests.create(lab, vmid, "pve1", "qemu", ["16M"])
    lab.exec("pve1", ["zfs", "create", "-s", "-V", "16M", "-o", "encryption=on",
                      "-o", "keyformat=passphrase", "-o", "keylocation=prompt", secret_ds],
             input=PASSPHRASE, check=True)  # fmt: skip
    lab.exec("pve1", ["udevadm", "settle"])
    guest = guests.find(lab, vmid)
    guest.config.write_text(guest.config.read_text() + f"scsi1: {STORE}:{secret},size=16M\n")
    guests.write(lab, vmid, 1_000_000)
    source_props = props(lab, "pve1", secret_ds)
    assert source_props["encryption"] == "aes-256-gcm"
    assert source_props["keystatus"] == "available"
    assert source_props["encryptionroot"] == secret_ds
    assert props(lab, "pve2", guests.DATA)["encryption"] == "off"  # a plain parent there
    try:
        pverep(lab, "pve1", "create-local-job", job, "pve2")
        run_job(lab, "pve1", job)
        lines = job_log(lab, "pve1", job)
        assert lines[-1] == f"{job}: end replication job", lines
        assert any(ln.endswith(f"stream form for '{STORE}:{secret}': raw resumable")
                   for ln in lines), lines  # fmt: skip
        assert any(ln.endswith(f"stream form for '{STORE}:{plain}': resumable")
                   for ln in lines), lines  # fmt: skip
        [snap] = repl_guids(lab, "pve1", vmid, job)[secret]
        sent, received = streams(lab, "pve1"), streams(lab, "pve2")
        assert f"send -pvw -- {secret_ds}@{snap}" in sent, sent
        assert f"send -pv -- {plain_ds}@{snap}" in sent, sent
        assert f"recv -F -s -- {secret_ds}" in received, received
        assert not [ln for ln in received if "-x encryption" in ln], received
        replica = props(lab, "pve2", secret_ds)
        assert replica == {
            "encryption": "aes-256-gcm",
            "encryptionroot": secret_ds,  # a raw receive keeps it its own encryption root
            "keystatus": "unavailable",  # the key never left pve1
            "keyformat": "passphrase",
        }
        assert props(lab, "pve2", plain_ds)["encryption"] == "off"
        assert repl_guids(lab, "pve2", vmid, job) == repl_guids(lab, "pve1", vmid, job)

        guests.write(lab, vmid, 300_000)
        run_job(lab, "pve1", job)
        lines = job_log(lab, "pve1", job)
        assert lines[-1] == f"{job}: end replication job", lines
        assert any(f"incremental sync '{STORE}:{secret}' ({snap} => " in ln for ln in lines)
        [snap2] = repl_guids(lab, "pve1", vmid, job)[secret]
        sent, received = streams(lab, "pve1"), streams(lab, "pve2")
        assert f"send -pvw -I {snap} -- {secret_ds}@{snap2}" in sent, sent
        assert not [ln for ln in received if "-x encryption" in ln], received
        assert props(lab, "pve2", secret_ds)["keystatus"] == "unavailable"
        assert repl_guids(lab, "pve2", vmid, job) == repl_guids(lab, "pve1", vmid, job)
        # the data: with the key loaded on pve2 the replica reads exactly as the source
        lab.exec("pve2", ["zfs", "load-key", secret_ds], input=PASSPHRASE, check=True)
        lab.exec("pve2", ["udevadm", "settle"])
        for _ in range(20):  # the zvol's device node appears once udev got the event
            if lab.exec("pve2", ["test", "-e", f"/dev/zvol/{secret_ds}"]).returncode == 0:
                break
            time.sleep(0.5)
        digests = guests.checksum(lab, vmid, "pve2")
        assert digests == guests.checksum(lab, vmid, "pve1")
        assert digests[f"{STORE}:{secret}"] is not None
    finally:
        delete_jobs_of(lab, vmid)
