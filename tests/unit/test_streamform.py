"""``storage.streamform``: the stream form for one volume, case by case (design.md, "Resumable
stream form"), and the form's name as the log shows it."""

from __future__ import annotations

import pytest

from pverep.storage.streamform import PVESR, ImportMode, StreamForm, StreamFormError
from pverep.storage.streamform import choose_stream_form as choose
from pverep.storage.zfscaps import ZfsCaps

ALL = ZfsCaps(True, True, True, True, True, True, True)
RESUME_TARGET = ZfsCaps(recv_resumable=True, recv_abort=True)
RAW = ZfsCaps(send_raw=True)
U_ONLY = ZfsCaps(send_no_preserve_encryption=True)
RESUMABLE = StreamForm(replication=False, resumable=True)


def test_names() -> None:
    assert StreamForm(True, False, False, False) == PVESR
    assert StreamForm().name == "pvesr"
    assert StreamForm(resumable=True, raw=True).name == "pvesr"  # -R wins
    assert RESUMABLE.name == "resumable"
    assert StreamForm(replication=False).name == "plain"
    assert StreamForm(replication=False, raw=True).name == "raw plain"
    assert StreamForm(replication=False, resumable=True, raw=True).name == "raw resumable"


def test_import_mode_defaults_to_pvesrs_receive() -> None:
    assert ImportMode() == ImportMode(False, False, False, False, ())


def test_a_stock_peer_or_a_silent_target_gets_pvesrs_stream_with_the_local_u_flag() -> None:
    u = StreamForm(no_preserve_encryption=True)
    assert choose(peer_is_pverep=False, local=ALL, remote=ALL) == u
    assert choose(peer_is_pverep=False, local=ALL, remote=ALL, encrypted=True) == u
    assert choose(peer_is_pverep=True, local=ALL, remote=None) == u
    assert choose(peer_is_pverep=True, local=ZfsCaps(), remote=None, encrypted=True) == PVESR


@pytest.mark.parametrize(
    ("local", "remote", "form"),
    [
        (ZfsCaps(send_resume=True), RESUME_TARGET, RESUMABLE),
        (ZfsCaps(), RESUME_TARGET, PVESR),  # this side cannot continue a stream
        (ZfsCaps(send_resume=True), ZfsCaps(recv_resumable=True), PVESR),  # no -A there
        (ZfsCaps(send_resume=True), ZfsCaps(recv_abort=True), PVESR),  # no -s there
        (ZfsCaps(send_resume=True, send_no_preserve_encryption=True), RESUME_TARGET, RESUMABLE),
        (U_ONLY, ZfsCaps(), StreamForm(no_preserve_encryption=True)),
    ],
)
def test_an_unencrypted_volume(local: ZfsCaps, remote: ZfsCaps, form: StreamForm) -> None:
    assert choose(peer_is_pverep=True, local=local, remote=remote) == form
    assert choose(peer_is_pverep=True, local=local, remote=remote, encrypted=False) == form


@pytest.mark.parametrize(
    ("local", "remote", "form"),
    [
        (RAW, RAW, StreamForm(replication=False, raw=True)),
        (
            ZfsCaps(send_resume=True, send_raw=True),
            ZfsCaps(send_raw=True, recv_resumable=True, recv_abort=True),
            StreamForm(replication=False, resumable=True, raw=True),
        ),
        (ZfsCaps(send_raw=True, send_no_preserve_encryption=True), ZfsCaps(),
         StreamForm(no_preserve_encryption=True)),  # no raw there: pvesr's -RpvU
        (U_ONLY, RAW, StreamForm(no_preserve_encryption=True)),  # no raw here
    ],
)  # fmt: skip
def test_an_encrypted_volume(local: ZfsCaps, remote: ZfsCaps, form: StreamForm) -> None:
    assert choose(peer_is_pverep=True, local=local, remote=remote, encrypted=True) == form


@pytest.mark.parametrize(("local", "remote"), [(RAW, ZfsCaps()), (ZfsCaps(), RAW)])
def test_an_encrypted_volume_without_raw_or_u_is_refused(local: ZfsCaps, remote: ZfsCaps) -> None:
    with pytest.raises(StreamFormError) as err:
        choose(peer_is_pverep=True, local=local, remote=remote, encrypted=True)
    assert str(err.value) == (
        "encrypted volume: neither a raw send (zfs send -w on both nodes) nor "
        "zfs send -U is available"
    )
