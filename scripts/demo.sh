#!/usr/bin/env bash
# The demo: on a fresh Debian (bookworm) machine, as root:
#   installs what is missing (Slurm 22.05, MariaDB, munge, libclang), builds and installs
#   spank-carbon, starts a local 4-node Slurm cluster whose GPUs are fake (a stand-in
#   libnvidia-ml with scripted power), runs a 2-node GPU job and prints its sacct line
#   with the energy and CO2e the plugin recorded. The cluster keeps running afterwards
#   (stop it with: scripts/cluster.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SC_CLUSTER_DIR=${SC_CLUSTER_DIR:-/var/lib/spank-carbon-cluster}
fake=$SC_CLUSTER_DIR/fake-nvml

echo "=== installing packages (if missing)"
scripts/cluster.sh install
echo "=== building"
cargo build --release --locked
scripts/install.sh release
install -d -m 0755 "$fake"
tests/fake-nvml/build.sh "$fake" >/dev/null

# Fake GPUs: 4 per node, 250-310 W each, energy counters that are the exact integral.
{
    echo "epoch $(date +%s)"
    for n in $(seq 1 "${SC_NODES:-4}"); do
        for m in 0 1 2 3; do
            printf 'gpu node%d %d 0x%02x %d name=FakeH100\n' "$n" "$m" $((0x10 * (m + 1))) $((250000 + 20000 * m + 5000 * n))
        done
    done
} >"$fake/fake-nvml.conf"

echo "=== starting the local cluster"
SC_PLUGSTACK="optional /usr/local/lib/spank-carbon/libspank_carbon.so nvml_lib=$fake/libnvidia-ml.so.1 state_dir=$SC_CLUSTER_DIR/state/%n sample_ms=500 settle_ms=1500" \
    scripts/cluster.sh start

echo "=== running a 2-node job with 2 GPUs per node for 10 s"
job=$(sbatch --parsable -N2 --gres=gpu:2 -o /dev/null --wrap 'sleep 10')
echo "job $job submitted"
while squeue -h -j "$job" | grep -q .; do sleep 1; done
printf 'job %s ended; waiting for its record' "$job"
for _ in $(seq 60); do
    if sacct -n -P -X -j "$job" -o SystemComment | grep -q 'nodes=2 '; then break; fi
    printf .; sleep 1
done
echo
echo "=== sacct -j $job -X -o JobID,Account,State,Elapsed,AllocTRES%36"
sacct -j "$job" -X -o JobID,Account,State,Elapsed,AllocTRES%36
echo
echo "=== sacct -j $job -X -n -P -o SystemComment      (the record spank-carbon wrote)"
sacct -j "$job" -X -n -P -o SystemComment
echo
echo "=== spank-carbon report -j $job"
spank-carbon report -j "$job"
echo
echo "The cluster keeps running: scripts/cluster.sh stop"
