#!/usr/bin/env bash
# Installs a built spank-carbon: the SPANK plugin and the spank-carbon binary.
#   scripts/install.sh [PROFILE]      PROFILE: release (default) or debug
# Installs /usr/local/lib/spank-carbon/libspank_carbon.so and /usr/local/sbin/spank-carbon
# (the plugin's default `bin=`), both root-owned. Restart slurmd after the first install.
set -euo pipefail
profile=${1:-release}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}/$profile
[[ -f $target/libspank_carbon.so && -x $target/spank-carbon ]] ||
    { echo "install.sh: build first: cargo build --$profile" >&2; exit 1; }
install -d -m 0755 /usr/local/lib/spank-carbon /usr/local/sbin
# Install to a temporary name and rename: a slurmstepd that has the old library mapped
# keeps it, and the next one loads the new one whole.
install -m 0755 -o root -g root "$target/libspank_carbon.so" /usr/local/lib/spank-carbon/.libspank_carbon.so.new
mv -f /usr/local/lib/spank-carbon/.libspank_carbon.so.new /usr/local/lib/spank-carbon/libspank_carbon.so
install -m 0755 -o root -g root "$target/spank-carbon" /usr/local/sbin/.spank-carbon.new
mv -f /usr/local/sbin/.spank-carbon.new /usr/local/sbin/spank-carbon
echo "installed /usr/local/lib/spank-carbon/libspank_carbon.so and /usr/local/sbin/spank-carbon (Slurm $(/usr/local/sbin/spank-carbon slurm-version))"
