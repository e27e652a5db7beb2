#!/usr/bin/env bash
# The Debian package on a clean root of a Slurm release, end to end: installed with dpkg, enabled by
# the one step its plugstack drop-in documents (run as written there), configured only through the
# packaged TOML file, then a GPU job on the test cluster (scripts/cluster.sh, fake GPUs) must get its
# record, measured by the packaged /usr/bin/spank-carbon, and `spank-carbon check` must pass.
#   scripts/package-e2e.sh [VERSION [DIR]]  VERSION: a release with a Debian root, 24.11 (default) or
#                                           26.05; DIR: where its .deb is
# Uses the .deb in DIR (default ${CARGO_TARGET_DIR:-target}/packages/VERSION, where scripts/package.sh
# puts it; made there if missing). The
# root is scripts/slurm-root.sh's for that release, built apart in $SC_PKG_ROOTS (default
# /var/lib/spank-carbon-roots/clean) and purged of the package before each run; its namespaces are
# named pkgVERSION, so the release's own test cluster may be up at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
v=${1:-24.11}
[[ $v == 24.11 || $v == 26.05 ]] || { echo "package-e2e: no Debian root for Slurm '$v' (24.11, 26.05)" >&2; exit 2; }
export SC_ROOTS=${SC_PKG_ROOTS:-/var/lib/spank-carbon-roots/clean}
export SC_NS_NAME=pkg${v/./}
msg() { echo "[package-e2e] $*"; }
fail() { echo "[package-e2e] FAILED: $*" >&2; exit 1; }

pkgdir=${2:-${CARGO_TARGET_DIR:-target}/packages/$v}
deb=$(find "$pkgdir" -maxdepth 1 -name "slurm-spank-carbon_*+slurm${v}_amd64.deb" 2>/dev/null | head -n 1)
if [[ -z $deb ]]; then
    scripts/package.sh --slurm "$v" --out "$pkgdir" >/dev/null
    deb=$(find "$pkgdir" -maxdepth 1 -name "slurm-spank-carbon_*+slurm${v}_amd64.deb" | head -n 1)
fi
scripts/slurm-root.sh down "$v" >/dev/null 2>&1 || true
scripts/slurm-root.sh build "$v"
root=$(scripts/slurm-root.sh root "$v")
inroot() { scripts/slurm-root.sh exec "$v" "$@"; }

# Clean: no earlier run's package, state or configuration.
chroot "$root" dpkg --purge slurm-spank-carbon >/dev/null 2>&1 || true
rm -rf "$root/var/lib/spank-carbon" "$root/etc/spank-carbon" "$root/var/lib/spank-carbon-cluster/state"
left=$(cd "$root" && find usr etc -name '*spank*carbon*' 2>/dev/null | head -n 5)
[[ -z $left ]] || fail "the root is not clean: $left"

msg "installing $(basename "$deb") into $root"
install -d -m 0755 "$root/var/cache/spank-carbon-e2e"
cp "$deb" "$root/var/cache/spank-carbon-e2e/"
chroot "$root" dpkg -i "/var/cache/spank-carbon-e2e/$(basename "$deb")"
[[ $(stat -c '%a %U' "$root/var/lib/spank-carbon") == "700 root" ]] || fail "state directory not root-only 0700"
dropin=/etc/slurm/plugstack.conf.d/spank-carbon.conf
grep -q '^optional' "$root$dropin" && fail "the drop-in is enabled on installation"

# The test cluster's fake GPUs, and the test's speed-ups, in the packaged configuration file.
fake=/var/lib/spank-carbon-cluster/fake-nvml
install -d -m 0755 "$root$fake"
tests/fake-nvml/build.sh "$root$fake" >/dev/null
{
    printf 'epoch %s\nlog %s/reads.log\n' "$(($(date +%s) - 100000))" "$fake"
    for m in 0 1 2 3; do printf 'gpu * %d 0x%02x %d\n' "$m" $((0x11 + m * 0x20)) $((150000 + m * 10000)); done
} >"$root$fake/fake-nvml.conf"
cat >>"$root/etc/spank-carbon/spank-carbon.toml" <<EOF

# Added by scripts/package-e2e.sh (the test cluster's fake GPUs and faster delivery).
nvml_lib = "$fake/libnvidia-ml.so.1"
state_dir = "/var/lib/spank-carbon-cluster/state/%n"
sample_ms = 200
settle_ms = 1500
stagger_ms = 300
intensity = 400
pue = 1.2
EOF

# The one step, as the drop-in writes it (the slurmd restart is the cluster's start below).
step=$(grep -oE "sed -i '[^']*' $dropin" "$root$dropin" | head -n 1)
[[ -n $step ]] || fail "no enabling step in $dropin"
msg "enabling: $step"
# As the administrator would type it: through a shell (its quoting is part of the step).
chroot "$root" /bin/sh -c "$step"
[[ $(grep -c '^optional ' "$root$dropin") == 1 ]] || fail "the step did not enable exactly one line"

scripts/slurm-root.sh up "$v"
trap 'scripts/slurm-root.sh down "$v" >/dev/null 2>&1 || true' EXIT
SC_PLUGSTACK='include /etc/slurm/plugstack.conf.d/*.conf' inroot scripts/cluster.sh start
inroot /usr/bin/spank-carbon check --node node1 || fail "spank-carbon check reports an error"
job=$(inroot /usr/bin/sbatch --parsable -o /dev/null -e /dev/null -N1 -w node2 --gres=gpu:2 --wrap 'sleep 3')
job=${job%%;*}
msg "job $job"
rec=""
for ((i = 0; i < 120; i++)); do
    rec=$(inroot /usr/bin/sacct -n -P -X -j "$job" -o SystemComment 2>/dev/null || true)
    [[ $rec == *spank-carbon/1* ]] && break
    sleep 1
done
[[ $rec == *spank-carbon/1* ]] || fail "job $job: no record in SystemComment: '$rec'"
msg "record: $rec"
[[ $rec == *" gpus=2 "* ]] || fail "record without gpus=2"
wh=$(grep -oE 'gpu_wh=[0-9.]+' <<<"$rec" | cut -d= -f2)
# Two fake GPUs of 160-180 W for about 3 s: a fraction of a Wh, not zero.
awk -v w="$wh" 'BEGIN { exit !(w > 0.1 && w < 2) }' || fail "gpu_wh=$wh is not about 3 s of two GPUs"
# Only the package's binary is there to measure and deliver (bin=/usr/bin/spank-carbon in the
# drop-in), and it used the state directory the packaged TOML names.
[[ ! -e $root/usr/local/sbin/spank-carbon ]] || fail "a binary outside the package"
inroot /usr/bin/grep -q "record in" /var/lib/spank-carbon-cluster/state/node2/spank-carbon.log ||
    fail "the courier left no log in the configured state directory"
! inroot /usr/bin/sinfo -h -N -o '%N %T' | grep -q 'drain\|down\|fail' || fail "a node is drained or down"
msg "Slurm $v: the package, enabled by its one step, recorded job $job ($wh Wh)"
