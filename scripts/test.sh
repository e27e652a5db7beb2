#!/usr/bin/env bash
# Runs every test of spank-carbon on this machine, from scratch, on every Slurm release it supports:
#   1. installs what it needs (Debian packages: Slurm 22.05, MariaDB, munge, libclang, mmdebstrap) and
#      builds the root file systems of the other releases (scripts/slurm-root.sh: Debian trixie has
#      Slurm 24.11, sid 26.05),
#   2. checks formatting and lints,
#   3. for each release in SC_SLURM_VERSIONS (default "22.05 24.11 26.05"):
#      builds the plugin and the tests against that release's headers, installs them (into the
#      release's root), builds the fake libnvidia-ml, starts a 4-node Slurm cluster of that release
#      (22.05 on this machine; the others in their roots, in their own namespaces), runs the unit
#      tests and every end-to-end test against it, then restarts it with 64 nodes (SC_BIG_NODES;
#      0 skips it) and runs tests/big.rs, a 64-node job,
# and stops every daemon it started when it ends, pass or fail. A release that fails does not stop
# the others; the summary at the end says how each went. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
big_nodes=${SC_BIG_NODES:-64}
[[ $big_nodes =~ ^[0-9]+$ ]] || { echo "SC_BIG_NODES must be a number, not '$big_nodes'" >&2; exit 2; }
read -r -a versions <<<"${SC_SLURM_VERSIONS:-22.05 24.11 26.05}"
for v in "${versions[@]}"; do
    [[ " $(scripts/slurm-root.sh versions) " == *" $v "* ]] ||
        { echo "SC_SLURM_VERSIONS: unknown Slurm version '$v' (have: $(scripts/slurm-root.sh versions))" >&2; exit 2; }
done
unset SC_NODES SLURM_INCLUDE_DIR
export PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SC_CLUSTER_DIR=/var/lib/spank-carbon-cluster
target=${CARGO_TARGET_DIR:-$here/target}
# The roots see this checkout at its own path; a target directory outside it is bound too.
export SC_ROOT_BIND=$target

step() { printf '\n=== %s\n' "$*"; }
stamp() { date -u +%H:%M:%S; }

plugstack="optional /usr/local/lib/spank-carbon/libspank_carbon.so state_dir=$SC_CLUSTER_DIR/state/%n"
up=()
cleanup() {
    step "stopping the clusters"
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    local v
    for v in "${up[@]}"; do scripts/slurm-root.sh down "$v" || true; done
}
trap cleanup EXIT

# The host's own release (22.05): built, installed and tested here, nextest when it is there.
test_host() {
    local v=$1
    step "Slurm $v: build and install $(stamp)"
    cargo build --release --locked
    scripts/install.sh release
    install -d -m 0755 "$SC_CLUSTER_DIR/fake-nvml"
    tests/fake-nvml/build.sh "$SC_CLUSTER_DIR/fake-nvml"

    step "Slurm $v: starting the local cluster $(stamp)"
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$SC_CLUSTER_DIR/state" "$SC_CLUSTER_DIR/jobs" "$SC_CLUSTER_DIR/fake-nvml/reads.log"
    SC_PLUGSTACK=$plugstack scripts/cluster.sh start

    step "Slurm $v: tests $(stamp)"
    # Everything but tests/real_gpu.rs, which needs an NVIDIA GPU (see BENCHMARKS.md),
    # tests/series_cost.rs and the simulation's bench, measurements (scripts/bench.sh runs
    # them), and tests/big.rs, which needs 64 nodes (below).
    local rc=0
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --release --locked --run-ignored all --test-threads 1 --no-fail-fast \
            -E 'not binary(real_gpu) and not binary(big) and not binary(series_cost) and not (binary(simulation) and test(=bench))' || rc=1
    else
        cargo test --release --locked -- --include-ignored --test-threads 1 --skip idle_gpus_counter \
            --skip sixty_four_node_job --skip epilog_cost_of_a_two_year_series \
            --skip whole_epilog_with_a_two_year_series --skip bench || rc=1
    fi

    if ((big_nodes >= 64)); then
        step "Slurm $v: tests/big.rs on a cluster of $big_nodes nodes $(stamp)"
        scripts/cluster.sh stop
        SC_NODES=$big_nodes SC_PLUGSTACK=$plugstack scripts/cluster.sh start
        cargo test --release --locked --test big -- --include-ignored --test-threads 1 --nocapture || rc=1
    else
        echo "tests/big.rs (a 64-node job) not run: SC_BIG_NODES=0"
    fi
    scripts/cluster.sh stop
    return $rc
}

# Another release: built here against its root's headers, run in its root and namespaces, where
# there is no cargo: the test executables run one by one (scripts/run-tests.sh).
test_root() {
    local v=$1 root
    root=$(scripts/slurm-root.sh root "$v")
    step "Slurm $v: build against $root/usr/include and install into the root $(stamp)"
    export SLURM_INCLUDE_DIR=$root/usr/include
    cargo build --release --locked
    cargo test --release --locked --no-run --message-format=json >"$target/tests-$v.json"
    unset SLURM_INCLUDE_DIR
    python3 - "$target/tests-$v.json" "$target/tests-$v" <<'PY'
import json, sys
seen, lists = set(), {"all": [], "big": []}
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    name = t["name"] + ("(bin)" if t["kind"] == ["bin"] else "")
    if name in seen or name in ("real_gpu", "series_cost"):
        continue
    seen.add(name)
    lists["big" if name == "big" else "all"].append(f"{name}\t{m['executable']}\n")
for k, v in lists.items():
    open(f"{sys.argv[2]}.{k}", "w").writelines(v)
PY
    SC_INSTALL_ROOT=$root scripts/install.sh release
    install -d -m 0755 "$root$SC_CLUSTER_DIR/fake-nvml"
    tests/fake-nvml/build.sh "$root$SC_CLUSTER_DIR/fake-nvml"
    rm -rf "$root$SC_CLUSTER_DIR/state" "$root$SC_CLUSTER_DIR/jobs" "$root$SC_CLUSTER_DIR/fake-nvml/reads.log"

    step "Slurm $v: starting its cluster in its root and namespaces $(stamp)"
    scripts/slurm-root.sh down "$v" >/dev/null 2>&1 || true
    scripts/slurm-root.sh up "$v"
    up+=("$v")
    local in=(scripts/slurm-root.sh exec "$v")
    SC_PLUGSTACK=$plugstack "${in[@]}" scripts/cluster.sh start

    step "Slurm $v: tests $(stamp)"
    local rc=0
    "${in[@]}" scripts/run-tests.sh "$target/tests-$v.all" --skip bench || rc=1
    if ((big_nodes >= 64)); then
        step "Slurm $v: tests/big.rs on a cluster of $big_nodes nodes $(stamp)"
        "${in[@]}" scripts/cluster.sh stop
        SC_NODES=$big_nodes SC_PLUGSTACK=$plugstack "${in[@]}" scripts/cluster.sh start
        "${in[@]}" scripts/run-tests.sh "$target/tests-$v.big" --nocapture || rc=1
    fi
    scripts/slurm-root.sh down "$v"
    return $rc
}

# One release, in a process of its own (so that `set -e` holds in it): scripts/test.sh __one VERSION.
if [[ ${1:-} == __one ]]; then
    if [[ -z $(scripts/slurm-root.sh root "$2") ]]; then test_host "$2"; else test_root "$2"; fi
    exit
fi

step "installing packages $(stamp)"
scripts/cluster.sh install
for v in "${versions[@]}"; do scripts/slurm-root.sh build "$v"; done

step "format and lints $(stamp)"
cargo fmt --check
cargo clippy --release --all-targets --locked -- -D warnings

declare -A result
failed=0
for v in "${versions[@]}"; do
    start=$SECONDS
    bash "$0" __one "$v" && r=passed || r=FAILED
    [[ $r == passed ]] || failed=1
    result[$v]="$r in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
done

step "summary $(stamp)"
for v in "${versions[@]}"; do echo "Slurm $v: ${result[$v]}"; done
exit $failed
