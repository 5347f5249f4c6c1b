"""ShellTarget's transfers (engine/target.py): which stream form, which send and import argv,
which import options, which path (serve session, per verb, TCP) and with which limits. The data
path itself (engine/transfer.py) is replaced by a RECORDER: these tests check what ShellTarget
asks it for, exactly; the bytes moving are tested in test_transfer_paths.py and the lab."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pverep.engine import target as target_mod
from pverep.engine.resume import ResumePoint
from pverep.engine.target import ShellTarget, _import_args
from pverep.engine.transfer import ChannelUnavailable, TransferSpec
from pverep.storage.streamform import ImportMode, StreamForm
from pverep.storage.zfs import send_argv
from pverep.storage.zfscaps import ZfsCaps
from pverep.transport.peer import PeerCommands

VOL = "local-zfs:vm-100-disk-0"
DS = "rpool/data/vm-100-disk-0"
SYNC = "__replicate_100-0_2000__"
BASE = "__replicate_100-0_1000__"
TOKEN = "1-abc-def-123"
#: Resume and raw on both ends (a pverep peer then gets the resumable, not pvesr's, form).
FULL = ZfsCaps(
    send_resume=True, recv_resumable=True, recv_abort=True, send_raw=True, send_dry_run=True
)
STALL = 42.0


class FakeSession:
    def __init__(self, ops: tuple[str, ...] = ("prepare", "finalize", "import")) -> None:
        self.ops = frozenset(ops)
        self.channel_works: bool | None = None


class Recorder:
    """Stands in for transfer_volume and transfer_volume_session: records every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, TransferSpec, dict[str, Any]]] = []
        self.session_error: str | None = None
        monkeypatch.setattr(target_mod, "transfer_volume", self.per_verb)
        monkeypatch.setattr(target_mod, "transfer_volume_session", self.session)

    def per_verb(self, local: Any, remote: Any, spec: TransferSpec, **kw: Any) -> str:
        self.calls.append(("verb", spec, {"local": local, "remote": remote, **kw}))
        return spec.volid

    def session(
        self, local: Any, session: Any, forward: Any, spec: TransferSpec, args: Any, **kw: Any
    ) -> str:
        self.calls.append(
            ("session", spec, {"local": local, "session": session, "forward": forward,
                               "args": args, **kw})
        )  # fmt: skip
        if self.session_error is not None:
            raise ChannelUnavailable(self.session_error)
        return spec.volid


LOCAL, REMOTE = object(), object()


def make(
    *,
    kind: str = "pverep",
    caps: ZfsCaps = FULL,
    remote_caps: ZfsCaps | None = FULL,
    snapshots: list[str] | None = None,
    encrypted: bool = False,
    session: FakeSession | None = None,
    forward: Callable[[int], list[str] | None] | None = None,
    tcp_address: str | None = None,
    budget: object = None,
    close_remote: Callable[[], None] | None = None,
    release: Callable[[], None] | None = None,
) -> ShellTarget:
    return ShellTarget(
        node="pve2",
        remote=REMOTE,  # type: ignore[arg-type]
        local=LOCAL,  # type: ignore[arg-type]
        send_argv=lambda v, s, b, f: send_argv(DS, s, b, form=f),
        commands=PeerCommands(kind=kind),  # type: ignore[arg-type]
        stall_timeout=STALL,
        tcp_address=tcp_address,
        close_remote=close_remote,
        release=release,
        budget=lambda: budget,  # type: ignore[arg-type,return-value]
        local_caps=caps,
        remote_caps=remote_caps,
        local_snapshots=lambda volid: list(snapshots or []),
        encrypted=lambda volid: encrypted,
        session=lambda: session,  # type: ignore[arg-type,return-value]
        forward=forward,
    )


def transfer(t: ShellTarget, log: list[str], *, base: str | None = BASE, **kw: Any) -> None:
    t.transfer(VOL, snapshot=SYNC, base=base, rate_bps=kw.pop("rate_bps", 5_000_000),
               insecure=kw.pop("insecure", False), log=log.append, **kw)  # fmt: skip


def import_argv(snap: str, base: str | None, *opts: str, file: str = "-") -> list[str]:
    argv = ["pverep", "import", VOL, "zfs", file, "-with-snapshots", "1", "-snapshot", snap,
            "-allow-rename", "0"]  # fmt: skip
    return argv + (["-base", base] if base else []) + list(opts)


def test_a_resumable_incremental_goes_per_verb_with_the_limits_and_prunes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder(monkeypatch)
    budget = object()
    stalled: list[str] = []
    t = make(budget=budget, close_remote=lambda: stalled.append("x"))
    t.discard.add(VOL)
    log: list[str] = []
    transfer(t, log, prune=["gone1", "gone2"])
    assert log == [f"stream form for '{VOL}': resumable"]
    assert len(rec.calls) == 1
    kind, spec, kw = rec.calls[0]
    assert kind == "verb"
    assert spec == TransferSpec(
        VOL,
        ["zfs", "send", "-pv", "-I", BASE, "--", f"{DS}@{SYNC}"],
        import_argv(SYNC, BASE, "-resumable", "1", "-discard-partial", "1",
                    "-prune", "gone1,gone2"),
    )  # fmt: skip
    on_stall = kw.pop("on_stall")
    assert kw == {
        "local": LOCAL, "remote": REMOTE, "rate_bps": 5_000_000, "stall_timeout": STALL,
        "log": kw["log"], "insecure": False, "budget": budget, "progress_offset": 0,
    }  # fmt: skip
    kw["log"]("through")
    assert log[-1] == "through"
    on_stall()
    assert stalled == ["x"]
    assert VOL not in t.discard  # discarded with this import: the next one does not again


def test_pvesrs_form_logs_nothing_and_never_prunes(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    t = make(kind="pve", snapshots=["a", SYNC])
    log: list[str] = []
    transfer(t, log, prune=["gone"])
    transfer(t, log, base=None, prune=["gone"])  # -R carries the older snapshots itself
    assert log == []
    assert [spec for _, spec, _ in rec.calls] == [
        TransferSpec(
            VOL, ["zfs", "send", "-Rpv", "-I", BASE, "--", f"{DS}@{SYNC}"],
            ["pvesm", "import", VOL, "zfs", "-", "-with-snapshots", "1", "-snapshot", SYNC,
             "-allow-rename", "0", "-base", BASE],
        ),
        TransferSpec(
            VOL, ["zfs", "send", "-Rpv", "--", f"{DS}@{SYNC}"],
            ["pvesm", "import", VOL, "zfs", "-", "-with-snapshots", "1", "-snapshot", SYNC,
             "-allow-rename", "0"],
        ),
    ]  # fmt: skip


def test_a_resumable_first_sync_sends_the_oldest_snapshot_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder(monkeypatch)
    t = make(snapshots=["first", "second", SYNC, "later"])
    t.discard.add(VOL)
    transfer(t, [], base=None, prune=["gone"])
    specs = [spec for _, spec, _ in rec.calls]
    assert specs == [
        TransferSpec(VOL, ["zfs", "send", "-pv", "--", f"{DS}@first"],
                     import_argv("first", None, "-resumable", "1", "-discard-partial", "1")),
        TransferSpec(VOL, ["zfs", "send", "-pv", "-I", "first", "--", f"{DS}@{SYNC}"],
                     import_argv(SYNC, "first", "-resumable", "1")),
    ]  # fmt: skip
    assert [kw["rate_bps"] for _, _, kw in rec.calls] == [5_000_000, 5_000_000]
    assert VOL not in t.discard


def test_a_first_sync_of_a_snapshot_not_listed_sends_it_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder(monkeypatch)
    for snapshots in ([SYNC, "later"], ["other"]):
        rec.calls.clear()
        transfer(make(snapshots=snapshots), [], base=None)
        assert [spec for _, spec, _ in rec.calls] == [
            TransferSpec(VOL, ["zfs", "send", "-pv", "--", f"{DS}@{SYNC}"],
                         import_argv(SYNC, None, "-resumable", "1")),
        ]  # fmt: skip


def test_an_encrypted_volume_goes_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    t = make(encrypted=True, snapshots=["first", SYNC])
    log: list[str] = []
    transfer(t, log, base=None)
    assert log == [f"stream form for '{VOL}': raw resumable"] * 1
    assert [spec.import_argv for _, spec, _ in rec.calls] == [
        import_argv("first", None, "-resumable", "1", "-raw", "1"),
        import_argv(SYNC, "first", "-resumable", "1", "-raw", "1"),
    ]
    assert rec.calls[0][1].send_argv == ["zfs", "send", "-pvw", "--", f"{DS}@first"]


def test_insecure_mode_imports_from_tcp_only_with_an_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder(monkeypatch)
    transfer(make(kind="pve", tcp_address="10.0.0.2"), [], insecure=True)
    transfer(make(kind="pve"), [], insecure=True)  # no address known: over ssh
    transfer(make(kind="pve", tcp_address="10.0.0.2"), [], insecure=False)
    assert [(spec.import_argv[4], kw["insecure"]) for _, spec, kw in rec.calls] == [
        ("tcp://10.0.0.2", True),
        ("-", False),
        ("-", False),
    ]


def test_an_import_goes_to_the_serve_session_with_the_verbs_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder(monkeypatch)
    session = FakeSession()
    budget = object()
    forward = lambda port: ["ssh", "-W", f"127.0.0.1:{port}"]  # noqa: E731
    t = make(session=session, forward=forward, budget=budget)
    t.discard.add(VOL)
    log: list[str] = []
    transfer(t, log, prune=["gone"])
    assert len(rec.calls) == 1
    kind, spec, kw = rec.calls[0]
    assert kind == "session"
    assert spec.import_argv == import_argv(
        SYNC, BASE, "-resumable", "1", "-discard-partial", "1", "-prune", "gone"
    )
    assert kw == {
        "local": LOCAL, "session": session, "forward": forward,
        "args": {
            "volid": VOL, "format": "zfs", "snapshot": SYNC, "base": BASE,
            "allow_rename": False, "resumable": True, "raw": False, "resume": False,
            "discard_partial": True, "prune": ["gone"],
        },
        "rate_bps": 5_000_000, "stall_timeout": STALL, "log": kw["log"], "budget": budget,
        "progress_offset": 0,
    }  # fmt: skip
    assert session.channel_works is None  # the recorder did not say


@pytest.mark.parametrize(
    ("kind", "ops", "works", "insecure", "with_forward"),
    [
        ("pve", ("import",), None, False, True),  # a stock peer has no session
        ("pverep", ("prepare", "finalize"), None, False, True),  # an older serve
        ("pverep", ("import",), False, False, True),  # found broken in this run
        ("pverep", ("import",), None, True, True),  # insecure mode: TCP
        ("pverep", ("import",), None, False, False),  # no way to forward a port
    ],
)
def test_when_imports_do_not_go_to_the_session(
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    ops: tuple[str, ...],
    works: bool | None,
    insecure: bool,
    with_forward: bool,
) -> None:
    rec = Recorder(monkeypatch)
    session = FakeSession(ops)
    session.channel_works = works
    forward = (lambda port: ["true"]) if with_forward else None
    t = make(kind=kind, session=session, forward=forward)
    transfer(t, [], insecure=insecure)
    assert [call[0] for call in rec.calls] == ["verb"]


def test_no_session_at_all_imports_per_verb(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    transfer(make(session=None, forward=lambda port: ["true"]), [])
    assert [call[0] for call in rec.calls] == ["verb"]


@pytest.mark.parametrize(("before", "after"), [(None, False), (True, True)])
def test_a_channel_that_fails_falls_back_per_verb(
    monkeypatch: pytest.MonkeyPatch, before: bool | None, after: bool
) -> None:
    """Never worked: per verb for the rest of the run; worked before: only this import."""
    rec = Recorder(monkeypatch)
    rec.session_error = "ssh -W 127.0.0.1:9 did not connect"
    session = FakeSession()
    session.channel_works = before
    t = make(session=session, forward=lambda port: ["true"])
    log: list[str] = []
    transfer(t, log)
    assert [call[0] for call in rec.calls] == ["session", "verb"]
    assert rec.calls[0][1] == rec.calls[1][1]
    assert session.channel_works is after
    assert log[-1] == (
        "no data channel through the serve session on 'pve2' (ssh -W 127.0.0.1:9 did not "
        "connect): importing per verb"
    )


def test_resume_continues_the_partial_receive_from_where_it_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder(monkeypatch)
    t = make()
    t.resume_points[VOL] = ResumePoint(TOKEN, BASE, 1_000, 4_000)
    log: list[str] = []
    assert t.resume(VOL, rate_bps=7, insecure=False, log=log.append) == BASE
    assert log == [f"resuming '{VOL}' ({BASE}) at 1000 of 5000 bytes"]
    assert len(rec.calls) == 1
    _, spec, kw = rec.calls[0]
    assert spec == TransferSpec(
        VOL, ["zfs", "send", "-v", "-t", TOKEN],
        import_argv(BASE, None, "-resumable", "1", "-resume", "1"),
    )  # fmt: skip
    assert (kw["rate_bps"], kw["insecure"], kw["progress_offset"]) == (7, False, 1_000)
    # the point is used up: a second call has nothing to resume
    assert t.resume(VOL, rate_bps=7, insecure=False, log=log.append) is None
    assert len(rec.calls) == 1 and len(log) == 1


def test_resume_of_a_raw_stream_and_of_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    t = make(encrypted=True, tcp_address="10.0.0.2")
    t.resume_points[VOL] = ResumePoint(TOKEN, BASE, 0, None)
    log: list[str] = []
    assert t.resume("local-zfs:vm-100-disk-1", rate_bps=None, insecure=True, log=log.append) is None
    assert t.resume(VOL, rate_bps=None, insecure=True, log=log.append) == BASE
    assert log == [f"resuming '{VOL}' ({BASE}) at 0 of unknown bytes"]
    _, spec, kw = rec.calls[0]
    assert spec.import_argv == import_argv(
        BASE, None, "-resumable", "1", "-raw", "1", "-resume", "1", file="tcp://10.0.0.2"
    )
    assert (kw["rate_bps"], kw["insecure"], kw["progress_offset"]) == (None, True, 0)


def test_import_args_mirror_the_mode() -> None:
    mode = ImportMode(resumable=False, raw=True, resuming=True, discard_partial=False,
                      prune=("a", "b"))  # fmt: skip
    assert _import_args(VOL, SYNC, None, mode) == {
        "volid": VOL, "format": "zfs", "snapshot": SYNC, "base": None, "allow_rename": False,
        "resumable": False, "raw": True, "resume": True, "discard_partial": False,
        "prune": ["a", "b"],
    }  # fmt: skip


def test_the_form_is_chosen_once_per_volume() -> None:
    calls: list[str] = []
    t = make()
    t.encrypted = lambda volid: calls.append(volid) or False  # type: ignore[func-returns-value]
    assert t.form(VOL) == StreamForm(replication=False, resumable=True)
    assert t.form(VOL) is t.form(VOL)
    assert calls == [VOL]
    assert t.keeps_partial(VOL)
    assert make(kind="pve").form(VOL) == StreamForm() and not make(kind="pve").keeps_partial(VOL)
    assert make(remote_caps=None).form(VOL) == StreamForm()


@pytest.mark.parametrize(
    ("kind", "caps", "capable"),
    [
        ("pverep", FULL, True),
        ("pve", FULL, False),
        ("pverep", ZfsCaps(send_resume=True), False),
        ("pverep", ZfsCaps(send_dry_run=True), False),
    ],
)
def test_resume_capable_needs_a_pverep_peer_and_send_t_and_dry_run(
    kind: str, caps: ZfsCaps, capable: bool
) -> None:
    assert make(kind=kind, caps=caps).resume_capable is capable


def test_close_releases_or_else_drops_the_connection() -> None:
    events: list[str] = []
    make(
        release=lambda: events.append("release"), close_remote=lambda: events.append("drop")
    ).close()
    make(close_remote=lambda: events.append("drop")).close()
    make().close()  # neither: nothing to do
    assert events == ["release", "drop"]
