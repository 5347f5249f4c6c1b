"""Content digest of directory trees; runs on a node (``python -m pverep.lab.digest DIR...``).

The digest covers relative paths, file types, symlink targets and file contents, in sorted
order, so two trees digest alike exactly when they hold the same files with the same data.
Prints one ``<sha256>  <dir>`` line per argument.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys


def tree_digest(top: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, top)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                digest.update(f"L\0{rel}\0{os.readlink(path)}\0".encode())
            elif stat.S_ISREG(info.st_mode):
                digest.update(f"F\0{rel}\0{info.st_size}\0".encode())
                with open(path, "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
        for name in dirs:
            digest.update(f"D\0{os.path.relpath(os.path.join(root, name), top)}\0".encode())
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    for top in argv:
        if not os.path.isdir(top):
            print(f"digest: {top}: not a directory", file=sys.stderr)
            return 1
        print(f"{tree_digest(top)}  {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
