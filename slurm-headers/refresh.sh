#!/usr/bin/env bash
# Refreshes the vendored SPANK headers from an installed libslurm-dev (Debian/Ubuntu)
# or from a Slurm install prefix: slurm-headers/refresh.sh [/usr/include/slurm]
set -euo pipefail
src=${1:-/usr/include/slurm}
here=$(cd "$(dirname "$0")" && pwd)
for h in spank.h slurm_errno.h slurm_version.h; do
    install -m 0644 "$src/$h" "$here/slurm/$h"
done
if [ -f /usr/share/doc/libslurm-dev/copyright ]; then
    install -m 0644 /usr/share/doc/libslurm-dev/copyright "$here/COPYRIGHT.debian"
fi
grep -h 'define SLURM_VERSION_NUMBER' "$here/slurm/slurm_version.h"
