"""Source side of resumable transfers: is a target's kept partial receive still usable?

The target reports a ``receive_resume_token`` per volume (its prepare answer's pverep part).
``zfs send -nvP -t <token>`` on this node checks it without sending: it fails when the token
is invalid or its snapshot is gone here, and otherwise prints the token's contents (the
snapshot it belongs to, ``toname``, and the ``bytes`` already received) and the estimate of
what is left (``size``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pverep.errors import PverepError

#: ``toname = pool/vm-100-disk-0@__replicate_100-0_1700000000__`` in the token contents.
_TONAME_RE = re.compile(r"^\s*toname\s*=\s*(\S+)\s*$")
#: ``bytes = 0x1100000`` (nvlist_print shows integers in hex; decimal is accepted too).
_BYTES_RE = re.compile(r"^\s*bytes\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*$")
#: ``size	12345`` (the parsable -P estimate of the rest of the stream).
_SIZE_RE = re.compile(r"^size\s+(\d+)\s*$")


class ResumeCheckError(PverepError):
    """The token cannot be continued from this node; str() says why (zfs's last line)."""


@dataclass(frozen=True)
class ResumePoint:
    """A kept partial receive this node can continue."""

    token: str
    snapshot: str  # the snapshot the partial receive belongs to (kept on this node)
    done: int  # bytes the target already has
    estimate: int | None  # bytes still to send (zfs's estimate)


def parse_resume_check(token: str, dataset: str, output: str) -> ResumePoint:
    """Parse ``zfs send -nvP -t`` output for ``dataset``'s token; ResumeCheckError if the
    token belongs to another dataset or the output lacks what is needed."""
    toname: str | None = None
    done = 0
    estimate: int | None = None
    for line in output.splitlines():
        if (m := _TONAME_RE.match(line)) is not None:
            toname = m.group(1)
        elif (m := _BYTES_RE.match(line)) is not None:
            done = int(m.group(1), 0)
        elif (m := _SIZE_RE.match(line.strip())) is not None:
            estimate = int(m.group(1))
    if toname is None:
        raise ResumeCheckError("the token names no snapshot")
    ds, sep, snap = toname.partition("@")
    if not sep or ds != dataset:
        raise ResumeCheckError(f"the token belongs to '{toname}'")
    return ResumePoint(token, snap, done, estimate)
