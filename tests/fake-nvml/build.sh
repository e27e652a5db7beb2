#!/usr/bin/env bash
# Build the fake NVML library used by spank-carbon's tests.
#
#   tests/fake-nvml/build.sh OUTDIR
#
# produces OUTDIR/libnvidia-ml.so.1 (soname libnvidia-ml.so.1) and the
# development symlink OUTDIR/libnvidia-ml.so -> libnvidia-ml.so.1.
# $CC overrides the compiler (default: gcc found on PATH).
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="$1"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

cc="${CC:-$(command -v gcc || true)}"
if [[ -z "$cc" ]]; then
    echo "build.sh: gcc not found on PATH (set CC)" >&2
    exit 1
fi

# Build to a temporary name and rename, so a concurrently running test never
# dlopens a half-written library.
tmp="$outdir/.libnvidia-ml.so.1.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" -shared -fPIC -O2 -Wall -Wextra -Werror -std=gnu11 -pthread \
    -Wl,-soname,libnvidia-ml.so.1 \
    -o "$tmp" "$here/fake_nvml.c" -ldl
mv -f "$tmp" "$outdir/libnvidia-ml.so.1"
ln -sfn libnvidia-ml.so.1 "$outdir/libnvidia-ml.so"
