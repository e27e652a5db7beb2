#!/usr/bin/env bash
# Runs every test of spank-carbon on this machine, from scratch:
#   1. installs what it needs (Debian packages: Slurm 22.05, MariaDB, munge, libclang),
#   2. checks formatting and lints, builds (release) and installs the plugin,
#   3. builds the fake libnvidia-ml and starts a Slurm cluster of $SC_NODES nodes (default 4),
#   4. runs the unit tests and the end-to-end tests against the cluster (tests/big.rs, a 64-node
#      job, only with SC_NODES=64 or more: SC_NODES=64 scripts/test.sh),
# and stops every daemon it started when it ends, pass or fail. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SC_CLUSTER_DIR=${SC_CLUSTER_DIR:-/var/lib/spank-carbon-cluster}

step() { printf '\n=== %s\n' "$*"; }

step "installing packages"
scripts/cluster.sh install

step "format and lints"
cargo fmt --check
cargo clippy --release --all-targets --locked -- -D warnings

step "build and install"
cargo build --release --locked
scripts/install.sh release
install -d -m 0755 "$SC_CLUSTER_DIR/fake-nvml"
tests/fake-nvml/build.sh "$SC_CLUSTER_DIR/fake-nvml"

step "starting the local Slurm cluster"
trap 'step "stopping the cluster"; scripts/cluster.sh stop || true' EXIT
scripts/cluster.sh stop >/dev/null 2>&1 || true
rm -rf "$SC_CLUSTER_DIR/state" "$SC_CLUSTER_DIR/jobs" "$SC_CLUSTER_DIR/fake-nvml/reads.log"
SC_PLUGSTACK="optional /usr/local/lib/spank-carbon/libspank_carbon.so state_dir=$SC_CLUSTER_DIR/state/%n" \
    scripts/cluster.sh start

step "tests"
# Everything but tests/real_gpu.rs, which needs an NVIDIA GPU (see BENCHMARKS.md), and
# tests/big.rs unless the cluster has the 64 nodes it needs (cluster.sh checked SC_NODES).
big_filter=" and not binary(big)"
big_skip=(--skip sixty_four_node_job)
if ((${SC_NODES:-4} >= 64)); then
    big_filter=
    big_skip=()
else
    echo "tests/big.rs (a 64-node job) left out: the cluster has ${SC_NODES:-4} nodes; SC_NODES=64 runs it"
fi
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --locked --run-ignored all --test-threads 1 --no-fail-fast \
        -E "not binary(real_gpu)$big_filter"
else
    cargo test --release --locked -- --include-ignored --test-threads 1 --skip idle_gpus_counter \
        "${big_skip[@]}"
fi
