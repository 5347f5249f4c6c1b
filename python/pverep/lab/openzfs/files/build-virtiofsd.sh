#!/bin/bash
# virtiofsd for the OpenZFS lab engine: the Rust implementation (the one QEMU documents since
# it dropped its C daemon), built once by cargo into a machine-wide cache outside any checkout.
set -euo pipefail
ROOT=${PVEREP_VIRTIOFSD_ROOT:-/var/cache/pverep/virtiofsd}
VERSION=1.14.0
if [ -x "$ROOT/bin/virtiofsd" ] && "$ROOT/bin/virtiofsd" --version 2>/dev/null | grep -q "$VERSION"; then
  exit 0
fi
command -v cargo >/dev/null || { echo "build-virtiofsd: cargo not found (install Rust)" >&2; exit 1; }
echo "openzfs lab: building virtiofsd $VERSION with cargo (a few minutes, once per machine)"
mkdir -p "$ROOT"
CARGO_TARGET_DIR="$ROOT/target" nice -n 10 cargo install -q --locked --root "$ROOT" "virtiofsd@$VERSION"
rm -rf "$ROOT/target"
