"""``make demo``: the main job of pverep, shown on the embedded lab cluster.

Grows with the project; today it shows what is built so far.
"""

from __future__ import annotations

import pverep
import pverep._core as core


def main() -> None:
    print(f"pverep {pverep.__version__} (Rust engine {core.core_version()})")


if __name__ == "__main__":
    main()
