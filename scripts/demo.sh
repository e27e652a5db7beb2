#!/usr/bin/env bash
# The demo: on a fresh Debian (bookworm) machine, as root:
#   installs what is missing (Slurm 22.05, MariaDB, munge, libclang), builds and installs
#   spank-carbon, starts a local 4-node Slurm cluster whose GPUs are fake (a stand-in
#   libnvidia-ml with scripted power), runs a 2-node GPU job and prints its sacct line
#   with the energy and CO2e the plugin recorded. The cluster keeps running afterwards
#   (stop it with: scripts/cluster.sh stop).
# SLURM=24.11 or SLURM=26.05 runs it on that Slurm release instead, in a Debian root file system of
# its own (trixie or sid, built once, about a minute) and its own namespaces (scripts/slurm-root.sh);
# on 26.05 the job's GPU energy shows in sacct's ConsumedEnergy too. That cluster keeps running as
# well: `scripts/slurm-root.sh exec 26.05 sacct ...` to look, `scripts/slurm-root.sh down 26.05` to
# stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SC_CLUSTER_DIR=/var/lib/spank-carbon-cluster
fake=$SC_CLUSTER_DIR/fake-nvml

# The job and what it shows: runs on this machine or, for another release, inside its root.
if [[ ${1:-} == __job ]]; then
    echo "=== running a 2-node job with 2 GPUs per node for 10 s (Slurm $(sinfo -V | awk '{print $2}'))"
    job=$(sbatch --parsable -N2 --gres=gpu:2 -o /dev/null --wrap 'sleep 10')
    echo "job $job submitted"
    while squeue -h -j "$job" | grep -q .; do sleep 1; done
    printf 'job %s ended; waiting for its record' "$job"
    for _ in $(seq 60); do
        if sacct -n -P -X -j "$job" -o SystemComment | grep -q 'nodes=2 '; then break; fi
        printf .
        sleep 1
    done
    echo
    if /usr/local/sbin/spank-carbon slurm-version | grep -qE '^(2[6-9]|25\.11)'; then
        # 25.11+: the record's energy is the job's energy TRES as well.
        sleep 2
        echo "=== sacct -j $job -X -o JobID,Account,State,Elapsed,ConsumedEnergy,ConsumedEnergyRaw,AllocTRES%60"
        sacct -j "$job" -X -o JobID,Account,State,Elapsed,ConsumedEnergy,ConsumedEnergyRaw,AllocTRES%60
        echo "(ConsumedEnergyRaw: the record's GPU energy in joules. sreport -T energy shows it once slurmdbd has"
        echo " rolled up the hour the job ended in, at the next full hour; see docs/REFERENCE.md on what it counts.)"
    else
        echo "=== sacct -j $job -X -o JobID,Account,State,Elapsed,AllocTRES%36"
        sacct -j "$job" -X -o JobID,Account,State,Elapsed,AllocTRES%36
    fi
    echo
    echo "=== sacct -j $job -X -n -P -o SystemComment      (the record spank-carbon wrote)"
    sacct -j "$job" -X -n -P -o SystemComment
    echo
    echo "=== spank-carbon report -j $job"
    spank-carbon report -j "$job"
    exit 0
fi

version=${SLURM:-22.05}
root=$(scripts/slurm-root.sh root "$version")

echo "=== installing packages (if missing)"
scripts/cluster.sh install
scripts/slurm-root.sh build "$version"
echo "=== building for Slurm $version"
if [[ -n $root ]]; then
    # Built here against the release's own headers, into a target directory of its own.
    export SLURM_INCLUDE_DIR=$root/usr/include CARGO_TARGET_DIR=$PWD/target/slurm-$version
fi
cargo build --release --locked
SC_INSTALL_ROOT=$root scripts/install.sh release
install -d -m 0755 "$root$fake"
tests/fake-nvml/build.sh "$root$fake" >/dev/null

# Fake GPUs: 4 per node, 250-310 W each, energy counters that are the exact integral.
{
    echo "epoch $(date +%s)"
    for n in $(seq 1 "${SC_NODES:-4}"); do
        for m in 0 1 2 3; do
            printf 'gpu node%d %d 0x%02x %d name=FakeH100\n' "$n" "$m" $((0x10 * (m + 1))) $((250000 + 20000 * m + 5000 * n))
        done
    done
} >"$root$fake/fake-nvml.conf"

in=()
if [[ -n $root ]]; then
    scripts/slurm-root.sh up "$version"
    in=(scripts/slurm-root.sh exec "$version")
fi
echo "=== starting the local cluster (Slurm $version)"
SC_PLUGSTACK="optional /usr/local/lib/spank-carbon/libspank_carbon.so nvml_lib=$fake/libnvidia-ml.so.1 state_dir=$SC_CLUSTER_DIR/state/%n sample_ms=500 settle_ms=1500" \
    "${in[@]}" scripts/cluster.sh start
"${in[@]}" scripts/demo.sh __job
echo
if [[ -n $root ]]; then
    echo "The cluster keeps running in its namespaces: scripts/slurm-root.sh exec $version sacct ...;"
    echo "stop it with: scripts/slurm-root.sh down $version"
else
    echo "The cluster keeps running: scripts/cluster.sh stop"
fi
