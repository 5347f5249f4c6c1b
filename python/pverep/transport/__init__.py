"""Transports: the only package that spawns processes (see docs/design.md, boundary rule 1).

``Shell`` is the one interface the rest of the program uses to run an argv somewhere: on this
node (``LocalShell``) or on a cluster peer through ssh (``SshShell``). ``tcp`` holds the
insecure-mode data channel of pvesm import/export; ``streamend`` decides whether a relay whose
receiver closed its pipe first lost any of the stream.
"""

from pverep.transport.base import CommandError, CommandResult, CommandTimeout, Process, Shell
from pverep.transport.local import LocalShell

__all__ = ["CommandError", "CommandResult", "CommandTimeout", "LocalShell", "Process", "Shell"]
