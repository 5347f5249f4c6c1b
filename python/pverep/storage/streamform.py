"""Which zfs stream goes from this node to a target: the one decision, from facts only.

pvesr sends ``zfs send -Rpv[U]`` into ``zfs recv -F [-x encryption]``: a replication stream,
which zfs cannot resume. Between two pverep nodes whose tools can (``send -t`` here,
``recv -s``/``-A`` there) pverep sends a plain, resumable stream instead and does what ``-R``
did explicitly (docs/design.md, "Resumable stream form"). An encrypted disk goes raw
(``-w``) where both ends can, so the replica stays encrypted with the source's key.
Inputs: is the target a pverep node, what both ``zfs`` binaries say they support
(storage/zfscaps.py), and whether the volume is encrypted. A stock peer always gets pvesr's
stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from pverep.errors import PverepError
from pverep.storage.zfscaps import ZfsCaps


class StreamFormError(PverepError):
    """No stream form both ends support can carry this volume safely."""


@dataclass(frozen=True)
class StreamForm:
    """How one volume is sent. ``replication`` is pvesr's ``-R`` form; the others exclude it."""

    replication: bool = True  # zfs send -R (not resumable)
    resumable: bool = False  # zfs recv -s on the target, zfs send -t to continue
    raw: bool = False  # zfs send -w: encrypted blocks as they are, key stays on the source
    no_preserve_encryption: bool = False  # zfs send -U (pvesr with Proxmox's zfsutils)

    @property
    def name(self) -> str:
        if self.replication:
            return "pvesr"
        return ("raw " if self.raw else "") + ("resumable" if self.resumable else "plain")


@dataclass(frozen=True)
class ImportMode:
    """pverep-only import options (a pverep source sends them only to a pverep target)."""

    resumable: bool = False  # zfs recv -s; a broken receive keeps its partial state
    raw: bool = False  # the stream is a raw send (-w): never strip its encryption
    resuming: bool = False  # the stream continues a partial receive (zfs send -t)
    discard_partial: bool = False  # zfs recv -A first (the source could not resume)
    prune: tuple[str, ...] = ()  # snapshots gone on the source, destroyed before receiving


#: pvesr's own stream (zfs-fuse, a stock peer, or tools without resume support).
PVESR = StreamForm()


def choose_stream_form(
    *,
    peer_is_pverep: bool,
    local: ZfsCaps,
    remote: ZfsCaps | None,
    encrypted: bool = False,
) -> StreamForm:
    """The stream form for one volume. ``remote`` is None when the target did not say (a
    stock peer never does)."""
    pvesr = StreamForm(no_preserve_encryption=local.send_no_preserve_encryption)
    if not peer_is_pverep or remote is None:
        return pvesr
    resumable = local.send_resume and remote.resume_target
    if encrypted:
        if local.send_raw and remote.send_raw:
            return StreamForm(replication=False, resumable=resumable, raw=True)
        if local.send_no_preserve_encryption:
            return pvesr  # pvesr's -RpvU: the replica takes the target parent's encryption
        raise StreamFormError(
            "encrypted volume: neither a raw send (zfs send -w on both nodes) nor "
            "zfs send -U is available"
        )
    if resumable:
        return StreamForm(replication=False, resumable=True)
    return pvesr
