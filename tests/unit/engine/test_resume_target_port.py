"""ShellTarget's resume decisions over a SCRIPTED local shell (the zfs answers are canned;
the real ones come from OpenZFS in the lab's OpenZFS engine) and the pverep-only argv."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from pverep.engine.target import ShellTarget
from pverep.errors import ValidationError
from pverep.storage.streamform import ImportMode
from pverep.storage.zfs import send_argv
from pverep.transport.base import CommandResult, Process
from pverep.transport.peer import PeerCommands
from tests.unit.test_zfscaps import DRY_RUN, OPENZFS, TOKEN

VOL = "local-zfs:vm-100-disk-0"
DS = "rpool/data/vm-100-disk-0"


class ScriptedShell:
    """Answers each argv from a table (stdout, stderr, exit code) and records the calls."""

    def __init__(self, answers: dict[str, tuple[str, str, int]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    @property
    def node(self) -> str:
        return "pve1"

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        self.calls.append(list(argv))
        out, err, code = self.answers.get(" ".join(argv[:3]), ("", "", 0))
        return CommandResult(list(argv), code, out.encode(), err.encode())

    def spawn(self, argv: Sequence[str], **kwargs: object) -> Process:
        raise AssertionError("no streams here")


def target(local: ScriptedShell, remote_answer: str, kind: str = "pverep") -> ShellTarget:
    remote = ScriptedShell({})
    remote.run = lambda argv, **kw: CommandResult(list(argv), 0, remote_answer.encode(), b"")  # type: ignore[method-assign]
    t = ShellTarget(
        node="pve2",
        remote=remote,  # type: ignore[arg-type]
        local=local,  # type: ignore[arg-type]
        send_argv=lambda v, s, b, f: send_argv(DS, s, b, form=f),
        commands=PeerCommands(kind=kind),  # type: ignore[arg-type]
        stall_timeout=None,
        local_caps=OPENZFS,
        dataset=lambda volid: DS,
    )
    return t


def answer(partial: dict[str, str]) -> str:
    return json.dumps({VOL: {}, "pverep": {"zfs": OPENZFS.to_json(), "partial": partial}})


def prepare(t: ShellTarget) -> None:
    t.prepare("100-0", [VOL], scan=[], last_sync=0, parent_snapname=None, force=False,
              on_stderr=lambda line: None)  # fmt: skip


def test_usable_token_is_kept_and_its_snapshot_named() -> None:
    local = ScriptedShell({"zfs send -nvP": (DRY_RUN, "", 0)})
    t = target(local, answer({VOL: TOKEN}))
    prepare(t)
    log: list[str] = []
    assert t.check_resumes([VOL], log.append) == {VOL: "__replicate_100-0_1700000000__"}
    assert log == []
    assert t.form(VOL).resumable and t.keeps_partial(VOL)


def test_stale_token_is_logged_and_discarded_with_the_next_import() -> None:
    gone = (
        "cannot resume send: 'rpool/data/vm-100-disk-0@x' used in the initial send no longer exists"
    )
    local = ScriptedShell({"zfs send -nvP": ("", gone, 255)})
    t = target(local, answer({VOL: TOKEN}))
    prepare(t)
    log: list[str] = []
    assert t.check_resumes([VOL], log.append) == {}
    assert log == [f"cannot resume '{VOL}' ({gone}) - discarding the partial receive"]
    assert VOL in t.discard


def test_invalid_token_from_the_target_never_reaches_an_argv() -> None:
    local = ScriptedShell({})
    t = target(local, answer({VOL: "1-2-3; reboot"}))
    prepare(t)
    assert t.check_resumes([VOL], lambda line: None) == {}
    assert VOL in t.discard and local.calls == []


def test_stock_peer_gets_pvesrs_argv_only() -> None:
    pve = PeerCommands(kind="pve")
    argv = pve.prepare_local_job("100-0", [VOL], last_sync=5)
    assert "--pverep-info" not in argv
    with pytest.raises(ValidationError):
        pve.import_(VOL, "s", None, "-", ImportMode(resumable=True))
    assert pve.import_(VOL, "s", "b", "-", ImportMode()) == pve.import_(VOL, "s", "b")


def test_pverep_import_options() -> None:
    argv = PeerCommands().import_(
        VOL,
        "s",
        "b",
        "-",
        ImportMode(resumable=True, raw=True, discard_partial=True, prune=("x", "y")),
    )
    assert argv[-8:] == ["-resumable", "1", "-raw", "1", "-discard-partial", "1", "-prune", "x,y"]
