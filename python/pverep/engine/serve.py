"""``pverep serve``: one target-side session per source, target and run (issue 13.3).

A pverep source opens ``pverep serve`` once per target and run over its ssh master and sends
the ``prepare-local-job`` and ``finalize-local-job`` requests of all of that run's jobs to it,
instead of paying a Python start (and an ssh session) per verb. The protocol is line-delimited
JSON, one object per line, nothing else on stdout:

* the session's first line: ``{"serve": "pverep", "version": 1, "ops": ["prepare", ...]}``;
* a request: ``{"id": <int>, "op": "prepare"|"finalize"|"import", "args": {...}}`` (the verbs'
  own arguments, typed: see ``parse_request``);
* an ``import`` is first answered ``{"id": <int>, "ready": true, "port": <int>, "key":
  "<hex>"}``: the stream then comes over that request's own data channel (engine/servechannel:
  127.0.0.1 only, the key as its first bytes), its final answer follows as below;
* its answer, in any order (requests run at once, one thread each): ``{"id": <int>,
  "ok": true, "stdout": "<what the verb prints>", "log": ["<line>", ...]}`` or ``{"id": <int>,
  "ok": false, "error": "<one line>", "log": [...]}``; a line that is no request at all is
  answered with ``"id": null``.

Every request is checked here exactly as the verb checks its argv (the same validators, then
the same ``engine/remote.py`` functions, so the target's own checks - volids, snapshot names,
"never touch a guest that lives on this node", import claims - run for every request). The
session ends at the end of its input, after the running requests.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from pverep.engine import remote
from pverep.engine.servechannel import DataChannel
from pverep.errors import PverepError, ValidationError
from pverep.storage.streamform import ImportMode
from pverep.transport import procs
from pverep.validate import (
    check_job_id_param,
    check_parent_snapname,
    check_storage_id,
    parse_volume_id,
)

SERVE_VERB = "serve"
PROTOCOL_VERSION = 1
OPS = ("prepare", "finalize", "import")
#: A request line longer than this is refused (a job has a few volumes, not megabytes).
MAX_REQUEST_BYTES = 1 << 20
#: How often a session-hosted import checks that its receiver still runs.
RECEIVER_POLL = 0.2

#: (probe the zfs features?, log sink) → this node as a target, read fresh per request.
TargetFactory = Callable[[bool, Callable[[str], None]], remote.TargetNode]


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: Mapping[str, Any]


def hello() -> dict[str, object]:
    return {"serve": "pverep", "version": PROTOCOL_VERSION, "ops": list(OPS)}


def _field(args: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = args.get(name, default)
    # bool is an int in Python: an integer field never takes true/false
    if value is not None and (not isinstance(value, kind) or (kind is int and value is True)):
        raise ValidationError(f"{name}: type check failed - got {json.dumps(value)}")
    return value


def _strings(args: Mapping[str, Any], name: str) -> list[str]:
    value = args.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{name}: a list of strings expected")
    return list(value)


def parse_request(line: bytes) -> Request:
    """One request line, its shape checked (the values are checked again by the verbs)."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ValidationError("request too long")
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("request is not a JSON object") from None
    if not isinstance(doc, dict):
        raise ValidationError("request is not a JSON object")
    rid = doc.get("id")
    if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
        raise ValidationError("request id: a non-negative integer expected")
    op = doc.get("op")
    if op not in OPS:
        raise ValidationError(f"unknown request '{op}'")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ValidationError("args: a JSON object expected")
    return Request(rid, str(op), args)


def _check_common(args: Mapping[str, Any]) -> tuple[str, list[str], int]:
    jobid = check_job_id_param(_field(args, "jobid", str, ""))
    volids = _strings(args, "volids")
    for volid in volids:
        parse_volume_id(volid)
    last_sync = _field(args, "last_sync", int, 0)
    if last_sync < 0:
        raise ValidationError("last_sync must be >= 0")
    return jobid, volids, last_sync


def run_prepare(
    make_target: TargetFactory, args: Mapping[str, Any], log: Callable[[str], None]
) -> str:
    """``prepare-local-job``'s answer line for ``args``."""
    jobid, volids, last_sync = _check_common(args)
    scan = [check_storage_id(s) for s in _strings(args, "scan")]
    parent = _field(args, "parent_snapname", str)
    if parent is not None:
        check_parent_snapname(parent)
    force = bool(_field(args, "force", bool, False))
    with_info = bool(_field(args, "pverep_info", bool, False))
    target = make_target(with_info, log)
    partial: dict[str, str] | None = {} if with_info else None
    result = remote.prepare_local_job(
        target, jobid, volids, scan=scan, last_sync=last_sync, parent_snapname=parent,
        force=force, partial=partial,
    )  # fmt: skip
    info = None if partial is None else remote.prepare_info(target, partial)
    return remote.format_prepare_result(result, info)


def run_finalize(
    make_target: TargetFactory, args: Mapping[str, Any], log: Callable[[str], None]
) -> str:
    jobid, volids, last_sync = _check_common(args)
    remote.finalize_local_job(make_target(False, log), jobid, volids, last_sync=last_sync)
    return ""


@dataclass(frozen=True)
class ImportContext:
    """What an ``import`` request needs beyond its arguments."""

    ready: Callable[[dict[str, object]], None]  # sends the ``ready`` message
    closing: threading.Event  # the session's input ended
    stall_timeout: float | None
    accept_timeout: float | None = None


def _flag(args: Mapping[str, Any], name: str) -> bool:
    return bool(_field(args, name, bool, False))


def _opt_snap(args: Mapping[str, Any], name: str) -> str | None:
    value: str | None = _field(args, name, str)
    return value


def run_import(
    make_target: TargetFactory,
    args: Mapping[str, Any],
    log: Callable[[str], None],
    ctx: ImportContext,
) -> str:
    """``pverep import <volid> zfs -``'s answer line, the stream read from this request's data
    channel. The same checks as the verb (engine/remote.py), in the same order: validate,
    then (once the source has proven the channel's key) claim the volume, check, receive."""
    volid = _field(args, "volid", str, "")
    parse_volume_id(volid)
    prune = _strings(args, "prune")
    mode = ImportMode(
        resumable=_flag(args, "resumable"),
        raw=_flag(args, "raw"),
        resuming=_flag(args, "resume"),
        discard_partial=_flag(args, "discard_partial"),
        prune=tuple(prune),
    )
    target = make_target(True, log)
    plan = remote.validate_import(
        target, volid, _field(args, "format", str, ""),
        snapshot=_opt_snap(args, "snapshot"), base=_opt_snap(args, "base"),
        allow_rename=_flag(args, "allow_rename"),
        delete_snapshot=_opt_snap(args, "delete_snapshot"), mode=mode,
    )  # fmt: skip
    extra = {} if ctx.accept_timeout is None else {"accept_timeout": ctx.accept_timeout}
    with DataChannel(ctx.closing, **extra) as channel:
        ctx.ready({"port": channel.port, "key": channel.key.hex()})
        conn = channel.accept(log)
    with conn, remote.claimed_import(target, plan, hosted=True) as claimed:
        done = threading.Event()
        watcher = threading.Thread(target=_end_channel_with_receiver, args=(claimed, conn, done))
        watcher.start()
        try:
            imported = remote.run_import(
                claimed, conn.fileno(), on_stderr=log, stall_timeout=ctx.stall_timeout
            )
        finally:
            done.set()
            watcher.join()
    return f"successfully imported '{imported}'"


def _end_channel_with_receiver(
    plan: remote.ImportPlan, conn: socket.socket, done: threading.Event
) -> None:
    """A superseding import stops only this request's ``zfs recv`` (importclaim, hosted): then
    end its channel too, or the receive would wait on a vanished source's socket until its
    stall timeout while holding the volume's claim."""
    while not done.wait(RECEIVER_POLL):
        receiver = None if plan.claim is None else plan.claim.record.receiver
        if receiver is not None and not procs.is_running(receiver):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            return


_HANDLERS = {"prepare": run_prepare, "finalize": run_finalize}


def answer(
    make_target: TargetFactory, request: Request, ctx: ImportContext | None = None
) -> dict[str, object]:
    """Run one request; never raises: an error is one line in the answer."""
    lines: list[str] = []
    try:
        if request.op == "import":
            if ctx is None:
                raise PverepError("import is not served here")
            out = run_import(make_target, request.args, lines.append, ctx)
        else:
            out = _HANDLERS[request.op](make_target, request.args, lines.append)
    except PverepError as err:
        return {"id": request.id, "ok": False, "error": str(err), "log": lines}
    except Exception as err:  # a bug must not end the session for the other jobs
        text = f"internal error: {type(err).__name__}: {err}".splitlines()[0]
        return {"id": request.id, "ok": False, "error": text, "log": lines}
    return {"id": request.id, "ok": True, "stdout": out, "log": lines}


def _known_id(line: bytes) -> int | None:
    """The id of a refused request, when it has a usable one (the source waits for it)."""
    try:
        rid = json.loads(line).get("id")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0 else None


class _Writer:
    """Answers from several request threads, one whole line at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, doc: Mapping[str, object]) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._out.write(data)
            self._out.flush()


def serve(
    make_target: TargetFactory,
    stdin: IO[bytes],
    stdout: IO[bytes],
    *,
    stall_timeout: float | None = remote.DEFAULT_IMPORT_STALL_TIMEOUT,
    accept_timeout: float | None = None,
) -> None:
    """The session loop: hello, then one thread per request until the input ends (an import
    still waiting for its data channel then gives up; running ones finish)."""
    writer = _Writer(stdout)
    writer.write(hello())
    running: list[threading.Thread] = []
    closing = threading.Event()

    def work(request: Request) -> None:
        def ready(doc: dict[str, object]) -> None:
            writer.write({"id": request.id, "ready": True, **doc})

        ctx = ImportContext(ready, closing, stall_timeout, accept_timeout)
        writer.write(answer(make_target, request, ctx))

    for line in iter(stdin.readline, b""):
        if not line.strip():
            continue
        try:
            request = parse_request(line)
        except ValidationError as err:
            writer.write({"id": _known_id(line), "ok": False, "error": str(err), "log": []})
            continue
        thread = threading.Thread(target=work, args=(request,), daemon=True)
        thread.start()
        running = [t for t in running if t.is_alive()] + [thread]
    closing.set()
    for thread in running:
        thread.join()
