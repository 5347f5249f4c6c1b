"""zfs-compat: make zfs-fuse 0.7 answer the OpenZFS 2.x calls a Proxmox node makes.

Inside every lab node this script covers ``/usr/sbin/zfs`` (bind mount, that node only); the
real binary stays reachable as ``/run/pvelab/zfs.real``, and ``PVELAB_ZFS_COMPAT=0`` in the
environment bypasses the shim. It runs as a plain script (stdlib only, no package import) so
that each ``zfs`` call costs one short interpreter start. Product code issues the real
OpenZFS commands; only this shim knows it talks to zfs-fuse.

What zfs-fuse (pool version 23, zfs version 4) lacks, and how the lab stands in:

=====================================  ==================================================
OpenZFS 2.x                            in the lab
=====================================  ==================================================
``zfs list -p`` / ``-Hp``              emulated: names (order, -r/-d/-t/-s/-S) from
                                       ``zfs list -H -o name``, exact values from one
                                       ``zfs get -Hp``; ``compressratio`` without the x
guid/createtxg as full integers         ``list``/``get`` substitute the exact numbers
(zfs-fuse prints ``14.1E``)            (zfs-fuse pretty-prints them without -p)
``zfs list -t snapshot FS``            adds ``-d 1`` (OpenZFS >= 0.8 semantics)
``zfs get -t TYPE``                    emulated by filtering rows
``destroy`` unmounts synchronously     retried while zfs-fuse says "dataset is busy"
                                       (its FUSE unmount is asynchronous)
busy mountpoint: ``cannot unmount      zfs-fuse's ``umount failed`` (after umount(8)'s
'X': pool or dataset is busy``         "target is busy") is reported in OpenZFS's words
zvols (``create -V``): VM disks        none. The lab creates ``vm-N-disk-M`` as
                                       filesystems; ``create -V`` fails with one clear line
resumable send/recv (``recv -s``,      none. ``recv -s`` is accepted and ignored (the
``send -t``, ``recv -A``,              receive is simply not resumable);
``receive_resume_token``)              ``receive_resume_token`` reads as ``-`` (no token),
                                       ``send -t`` and ``recv -A`` fail
bookmarks (``zfs bookmark``,           none. ``list -t bookmark`` lists nothing;
``send -i fs#bm``)                     ``zfs bookmark`` and ``send -i #bm`` fail
``send -c/-L/-e/-w``                   dropped: compressed, large-block, embedded and raw
                                       streams only change the stream format, the data
                                       received is the same (no dataset is encrypted)
encryption properties                  ``encryption`` reads ``off``, ``keystatus`` ``-``,
                                       ``keyformat``/``keylocation`` ``none``
``send -nvP`` size estimate,            not available (fail as zfs-fuse does)
``recv -o/-x``, ``zfs holds``,
``zfs diff``, ``zfs version``
=====================================  ==================================================
"""

from __future__ import annotations

import getopt
import os
import subprocess
import sys
import time

REAL = os.environ.get("PVELAB_ZFS_REAL", "/run/pvelab/zfs.real")

ALIASES = {
    "avail": "available",
    "refer": "referenced",
    "ratio": "compressratio",
    "reserv": "reservation",
    "refreserv": "refreservation",
    "recsize": "recordsize",
    "usedsnap": "usedbysnapshots",
    "usedds": "usedbydataset",
    "usedchild": "usedbychildren",
    "usedrefreserv": "usedbyrefreservation",
    "volblock": "volblocksize",
    "compress": "compression",
}
EXACT = {"guid", "createtxg"}
#: Properties zfs-fuse does not know, with the value OpenZFS shows for a plain dataset.
SYNTHETIC = {
    "receive_resume_token": "-",
    "encryption": "off",
    "keystatus": "-",
    "keyformat": "none",
    "keylocation": "none",
}
DEFAULT_LIST_COLS = "name,used,available,referenced,mountpoint"


def exec_real(args: list[str]) -> None:
    os.execv(REAL, [REAL, *args])  # noqa: S606 - argv list, no shell


def fail(message: str, status: int = 1) -> int:
    print(f"zfs: {message}", file=sys.stderr)
    return status


def real(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REAL, *args], capture_output=True, text=True, check=False)


def canon(props: str) -> list[str]:
    return [ALIASES.get(p, p) for p in props.split(",") if p]


def dataset_type(name: str) -> str:
    return "snapshot" if "@" in name else "bookmark" if "#" in name else "filesystem"


def emit(rows: list[list[str]], header: list[str], scripted: bool) -> None:
    if scripted:
        for row in rows:
            print("\t".join(row))
        return
    table = [[h.upper() for h in header], *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def zfs_list(args: list[str]) -> int:
    try:
        opts, targets = getopt.getopt(args, "Hprd:o:s:S:t:")
    except getopt.GetoptError:
        exec_real(["list", *args])
        return 2
    scripted = parsable = recursive = False
    depth = cols_opt = types = ""
    sorts: list[str] = []
    for opt, val in opts:
        if opt == "-H":
            scripted = True
        elif opt == "-p":
            parsable = True
        elif opt == "-r":
            recursive = True
        elif opt == "-d":
            depth = val
        elif opt == "-o":
            cols_opt = val
        elif opt == "-t":
            types = val
        else:
            sorts += [opt, val]
    sel = (["-r"] if recursive else []) + (["-d", depth] if depth else [])
    if types:
        wanted = [t for t in types.split(",") if t not in ("bookmark", "bookmarks")]
        if not wanted:  # zfs-fuse has no bookmarks: the answer is an empty list
            check = real(["list", "-H", "-o", "name", *targets])
            sys.stderr.write(check.stderr)
            return check.returncode
        snap_only = all(t in ("snapshot", "snap", "snapshots") for t in wanted)
        if snap_only and not sel and targets and not any("@" in t for t in targets):
            sel = ["-d", "1"]  # OpenZFS >= 0.8 lists FS's snapshots for `-t snapshot FS`
        sel += ["-t", ",".join(wanted)]
    cols = canon(cols_opt or DEFAULT_LIST_COLS)
    if not parsable and not (scripted and EXACT & set(cols)):
        out = ["list"] + (["-H"] if scripted else []) + (["-o", cols_opt] if cols_opt else [])
        exec_real([*out, *sel, *sorts, *targets])
        return 2
    listed = real(["list", "-H", "-o", "name", *sel, *sorts, *targets])
    if listed.returncode != 0:
        sys.stderr.write(listed.stderr)
        return listed.returncode
    names = listed.stdout.splitlines()
    if not names:
        return 0
    wanted_exact = sorted(EXACT & set(cols)) if not parsable else cols
    got = real(["get", "-Hp", "-o", "name,property,value", ",".join(wanted_exact), *names])
    if got.returncode != 0:
        sys.stderr.write(got.stderr)
        return got.returncode
    values: dict[tuple[str, str], str] = {}
    for line in got.stdout.splitlines():
        name, prop, value = line.split("\t", 2)
        values[name, prop] = value
    if parsable:
        rows = [[values.get((n, c), "-") for c in cols] for n in names]
        for row in rows:
            for i, col in enumerate(cols):
                if col == "compressratio":
                    row[i] = row[i].removesuffix("x")
    else:
        shown = real(["list", "-H", "-o", ",".join(cols), *sel, *sorts, *targets])
        rows = [line.split("\t") for line in shown.stdout.splitlines()]
        for name, row in zip(names, rows, strict=False):
            for i, col in enumerate(cols):
                if col in EXACT and (name, col) in values:
                    row[i] = values[name, col]
    emit(rows, cols, scripted)
    return 0


def zfs_get(args: list[str]) -> int:
    try:
        opts, rest = getopt.getopt(args, "Hprd:o:s:t:")
    except getopt.GetoptError:
        exec_real(["get", *args])
        return 2
    if not rest:
        exec_real(["get", *args])
    scripted = parsable = False
    fields_opt = types = ""
    sel: list[str] = []
    for opt, val in opts:
        if opt == "-H":
            scripted = True
        elif opt == "-p":
            parsable = True
        elif opt == "-o":
            fields_opt = val
        elif opt == "-t":
            types = val
        elif opt == "-r":
            sel.append("-r")
        else:
            sel += [opt, val]
    props, targets = canon(rest[0]), rest[1:]
    synthetic = [p for p in props if p in SYNTHETIC]
    if not types and not synthetic:
        flags = (["-H"] if scripted else []) + (["-o", fields_opt] if fields_opt else [])
        if parsable or set(props) <= EXACT:
            flags.append("-p")  # OpenZFS prints guid/createtxg as exact numbers anyway
        exec_real(["get", *flags, *sel, rest[0], *targets])
        return 2
    real_props = ["name"] + [p for p in props if p not in SYNTHETIC and p != "name"]
    fields4 = "name,property,value,source"
    flags = ["-H", *(["-p"] if parsable else []), *sel, "-o", fields4]
    got = real(["get", *flags, ",".join(real_props), *targets])
    if got.returncode != 0:
        sys.stderr.write(got.stderr)
        return got.returncode
    order: list[str] = []
    rows_of: dict[str, dict[str, list[str]]] = {}
    for line in got.stdout.splitlines():
        row = line.split("\t")
        if row[0] not in rows_of:
            order.append(row[0])
            rows_of[row[0]] = {}
        rows_of[row[0]][row[1]] = row
    wanted_types = {t.removesuffix("s") for t in types.split(",")} if types else set()
    if "snap" in wanted_types:
        wanted_types.add("snapshot")
    if "all" in wanted_types:
        wanted_types |= {"snapshot", "filesystem", "volume"}
    fields = fields_opt.split(",") if fields_opt else ["name", "property", "value", "source"]
    index = {"name": 0, "property": 1, "value": 2, "source": 3}
    out: list[list[str]] = []
    for name in order:
        if wanted_types and dataset_type(name) not in wanted_types:
            continue
        known = rows_of[name]
        for prop in props if "all" not in props else list(known):
            if prop in SYNTHETIC:
                row = [name, prop, SYNTHETIC[prop], "-"]
            elif prop in known:
                row = known[prop]
            else:
                continue
            out.append([row[index[f]] for f in fields if f in index])
    emit(out, [f for f in fields if f in index], scripted)
    return 0


#: What zfs-fuse prints when ``umount`` refuses a filesystem in use ...
_FUSE_UMOUNT_BUSY = "target is busy"
_FUSE_UMOUNT_FAILED = "': umount failed"
#: ... and what OpenZFS 2.x prints for the same EBUSY (umount2), which PVE's destroy retries on.
OPENZFS_UMOUNT_BUSY = "cannot unmount '{}': pool or dataset is busy"


def openzfs_unmount_error(stderr: str) -> str:
    """zfs-fuse's "umount: X: target is busy." + "cannot unmount 'X': umount failed: …" in
    OpenZFS 2.x words; any other stderr is returned as is."""
    lines = stderr.splitlines()
    if not any(_FUSE_UMOUNT_BUSY in line for line in lines):
        return stderr
    out = []
    for line in lines:
        if _FUSE_UMOUNT_BUSY in line:
            continue  # OpenZFS unmounts with umount2(), no umount(8) message
        if line.startswith("cannot unmount '") and _FUSE_UMOUNT_FAILED in line:
            line = OPENZFS_UMOUNT_BUSY.format(line[len("cannot unmount '") :].split("'", 1)[0])
        out.append(line)
    return "".join(f"{line}\n" for line in out)


def zfs_destroy(args: list[str]) -> int:
    # zfs-fuse unmounts asynchronously: the first destroy of a mounted fs says "busy".
    result = real(["destroy", *args])
    for _ in range(10):
        if result.returncode == 0 or "dataset is busy" not in result.stderr:
            break
        time.sleep(0.2)
        result = real(["destroy", *args])
    sys.stdout.write(result.stdout)
    # a filesystem really in use: say so as OpenZFS does (no retry here, that is the caller's)
    sys.stderr.write(openzfs_unmount_error(result.stderr))
    return result.returncode


def strip_flags(args: list[str], drop: str, with_value: str) -> list[str]:
    """Remove single-letter flags in ``drop`` from the leading option clusters of ``args``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return out + args[i:]
        kept = "-"
        for pos, letter in enumerate(arg[1:], start=1):
            if letter in with_value:
                kept += arg[pos:]
                if pos == len(arg) - 1 and i + 1 < len(args):  # value is the next argument
                    out.append(kept)
                    kept = ""
                    i += 1
                    out.append(args[i])
                break
            if letter not in drop:
                kept += letter
        if kept and kept != "-":
            out.append(kept)
        i += 1
    return out


def zfs_send(args: list[str]) -> int:
    if any("#" in a for a in args):
        return fail("bookmarks are not supported by zfs-fuse (pverep lab)")
    exec_real(["send", *strip_flags(args, drop="cLew", with_value="iIt")])
    return 2


def zfs_recv(command: str, args: list[str]) -> int:
    exec_real([command, *strip_flags(args, drop="s", with_value="ox")])
    return 2


def zfs_create(args: list[str]) -> int:
    # "-V" possibly in a cluster ("-sV"); a letter after "o" belongs to the -o value
    if any(a.startswith("-") and not a.startswith("--") and "V" in a.split("o")[0] for a in args):
        return fail("zvols are not supported by zfs-fuse; the lab uses filesystems for VM disks")
    exec_real(["create", *args])
    return 2


def main(argv: list[str]) -> int:
    if os.environ.get("PVELAB_ZFS_COMPAT") == "0" or not argv:
        exec_real(argv)
    command, args = argv[0], argv[1:]
    if command == "list":
        return zfs_list(args)
    if command == "get":
        return zfs_get(args)
    if command == "destroy":
        return zfs_destroy(args)
    if command == "send":
        return zfs_send(args)
    if command in ("recv", "receive"):
        return zfs_recv(command, args)
    if command == "create":
        return zfs_create(args)
    exec_real(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
