#!/usr/bin/env bash
# Runs every test of spank-carbon on this machine, from scratch:
#   1. installs what it needs (Debian packages: Slurm 22.05, MariaDB, munge, libclang),
#   2. checks formatting and lints, builds (release) and installs the plugin,
#   3. builds the fake libnvidia-ml and starts a 4-node Slurm cluster,
#   4. runs the unit tests and the end-to-end tests against the cluster,
#   5. restarts the cluster with 64 nodes (SC_BIG_NODES; 0 skips it) and runs tests/big.rs, a
#      64-node job (the other end-to-end tests are written for four nodes),
# and stops every daemon it started when it ends, pass or fail. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
big_nodes=${SC_BIG_NODES:-64}
[[ $big_nodes =~ ^[0-9]+$ ]] || { echo "SC_BIG_NODES must be a number, not '$big_nodes'" >&2; exit 2; }
unset SC_NODES
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
plugstack="optional /usr/local/lib/spank-carbon/libspank_carbon.so state_dir=$SC_CLUSTER_DIR/state/%n"
SC_PLUGSTACK=$plugstack scripts/cluster.sh start

step "tests"
# Everything but tests/real_gpu.rs, which needs an NVIDIA GPU (see BENCHMARKS.md),
# tests/series_cost.rs and the simulation's bench, measurements (scripts/bench.sh runs
# them), and tests/big.rs, which needs 64 nodes (below).
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --locked --run-ignored all --test-threads 1 --no-fail-fast \
        -E 'not binary(real_gpu) and not binary(big) and not binary(series_cost) and not (binary(simulation) and test(=bench))'
else
    cargo test --release --locked -- --include-ignored --test-threads 1 --skip idle_gpus_counter \
        --skip sixty_four_node_job --skip epilog_cost_of_a_two_year_series \
        --skip whole_epilog_with_a_two_year_series --skip bench
fi

if ((big_nodes >= 64)); then
    step "tests/big.rs on a cluster of $big_nodes nodes"
    scripts/cluster.sh stop
    SC_NODES=$big_nodes SC_PLUGSTACK=$plugstack scripts/cluster.sh start
    cargo test --release --locked --test big -- --include-ignored --test-threads 1 --nocapture
else
    echo "tests/big.rs (a 64-node job) not run: SC_BIG_NODES=0"
fi
