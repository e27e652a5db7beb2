#!/usr/bin/env bash
# Installs a built spank-carbon: the SPANK plugin and the spank-carbon binary.
#   scripts/install.sh [PROFILE]      PROFILE: release (default) or debug
# Installs /usr/local/lib/spank-carbon/libspank_carbon.so and /usr/local/sbin/spank-carbon
# (the plugin's default `bin=`), both root-owned. Restart slurmd after the first install.
# SC_INSTALL_ROOT: install into that root file system instead of / (the test roots of other Slurm
# releases, scripts/slurm-root.sh).
set -euo pipefail
profile=${1:-release}
R=${SC_INSTALL_ROOT:-}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}/$profile
[[ -f $target/libspank_carbon.so && -x $target/spank-carbon ]] ||
    { echo "install.sh: build first: cargo build --$profile" >&2; exit 1; }
install -d -m 0755 "$R/usr/local/lib/spank-carbon" "$R/usr/local/sbin"
# Install to a temporary name and rename: a slurmstepd that has the old library mapped
# keeps it, and the next one loads the new one whole.
install -m 0755 -o root -g root "$target/libspank_carbon.so" "$R/usr/local/lib/spank-carbon/.libspank_carbon.so.new"
mv -f "$R/usr/local/lib/spank-carbon/.libspank_carbon.so.new" "$R/usr/local/lib/spank-carbon/libspank_carbon.so"
install -m 0755 -o root -g root "$target/spank-carbon" "$R/usr/local/sbin/.spank-carbon.new"
mv -f "$R/usr/local/sbin/.spank-carbon.new" "$R/usr/local/sbin/spank-carbon"
echo "installed $R/usr/local/lib/spank-carbon/libspank_carbon.so and $R/usr/local/sbin/spank-carbon (Slurm $("$R/usr/local/sbin/spank-carbon" slurm-version))"
