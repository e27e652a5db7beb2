#!/usr/bin/env bash
# Runs every test of spank-carbon on this machine, from scratch, on every Slurm release it supports:
#   1. installs what it needs (Debian packages: Slurm 22.05, MariaDB, munge, libclang, mmdebstrap) and
#      builds the root file systems of the other releases (scripts/slurm-root.sh: Debian trixie has
#      Slurm 24.11, sid 26.05),
#   2. checks formatting and lints,
#   3. for each release in SC_SLURM_VERSIONS (default "22.05 24.11 26.05"), one after another: builds
#      the plugin, the command and the tests against that release's headers, keeps the test
#      executables apart (target/matrix/VERSION), installs the plugin (into the release's root;
#      22.05 on this machine) and builds the fake libnvidia-ml there, then builds its .deb and
#      .rpm and checks them (scripts/package-test.sh: contents, pinned dependencies, lintian),
#   4. starts a 4-node cluster of each release in its own network, mount, pid, UTS and IPC
#      namespaces (22.05 on this machine's file system, the others chrooted into their roots), so
#      that they cannot collide, and runs the unit tests and every end-to-end test against each, the
#      three releases at the same time (each suite one test at a time),
#   5. installs the 24.11 .deb into a clean Slurm 24.11 root, enables it by the one step its drop-in
#      documents and runs a GPU job there (scripts/package-e2e.sh),
#   6. then, one release at a time, restarts its cluster with 64 nodes (SC_BIG_NODES; 0 skips it) and
#      runs tests/big.rs, a 64-node job whose record must be whole within 30 s of its end,
# and stops every daemon it started when it ends, pass or fail. Each release's output is in
# target/matrix/VERSION/test.log, printed at the end; the summary says how each went. Needs root.
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
matrix=$target/matrix
# The roots see this checkout at its own path; a target directory outside it is bound too.
export SC_ROOT_BIND=$target
plugstack="optional /usr/local/lib/spank-carbon/libspank_carbon.so state_dir=$SC_CLUSTER_DIR/state/%n"

step() { printf '\n=== %s  [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }

up=()
cleanup() {
    local v
    for v in "${up[@]}"; do scripts/slurm-root.sh down "$v" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

step "installing packages and the roots of other Slurm releases"
scripts/cluster.sh install
scripts/package.sh --install-deps # dpkg-dev, rpm, lintian, mandoc...: the packages and man pages' tests
for v in "${versions[@]}"; do scripts/slurm-root.sh build "$v"; done
# A cluster left running on this machine (scripts/demo.sh's) would share its files with the tests'.
scripts/cluster.sh stop >/dev/null 2>&1 || true

step "format and lints"
cargo fmt --check
cargo clippy --release --all-targets --locked -- -D warnings

# build VERSION: the plugin, command and test executables for that release, kept in $matrix/VERSION
# with the lists run-tests.sh reads (all: the unit tests of the library and the command, hermetic,
# cluster and simulation, each of hermetic and cluster a module at a time; big: tests/big.rs, run
# apart on 64 nodes; real_gpu, which needs an NVIDIA GPU, and series_cost, a measurement, in
# neither); installed where its cluster runs.
build() {
    local v=$1 root out=$matrix/$1
    root=$(scripts/slurm-root.sh root "$v")
    step "Slurm $v: build${root:+ against $root/usr/include} and install"
    rm -rf "$out"
    mkdir -p "$out/bin"
    if [[ -n $root ]]; then export SLURM_INCLUDE_DIR=$root/usr/include; fi
    cargo build --release --locked
    # real_gpu and series_cost are not run here: not built either (clippy checks that they compile).
    cargo test --release --locked --no-run --lib --bins --test hermetic --test cluster --test simulation \
        --test big --message-format=json >"$out/build.json"
    unset SLURM_INCLUDE_DIR
    python3 - "$out" <<'PY'
import json, os, shutil, subprocess, sys
out = sys.argv[1]
# By cargo's target name (the unit tests of the command: spank-carbon-bin): any not named here
# goes to "all".
apart = {"big": "big", "real_gpu": None, "series_cost": None}
by_module = {"hermetic", "cluster"}
seen, lists = set(), {"all": [], "big": []}
for line in open(os.path.join(out, "build.json")):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    name = t["name"] + ("-bin" if t["kind"] == ["bin"] else "")
    if name in seen:
        continue
    seen.add(name)
    where = apart.get(name, "all")
    if where is None:
        continue
    exe = os.path.join(out, "bin", name)
    shutil.copy2(m["executable"], exe)
    if name not in by_module:
        lists[where].append(f"{name}\t{exe}\n")
        continue
    # A line per module, its filter third: each its own run, pass or fail and time.
    listed = subprocess.run([exe, "--list"], capture_output=True, text=True, check=True).stdout
    tests = [l[: -len(": test")] for l in listed.splitlines() if l.endswith(": test")]
    for mod in sorted({n.split("::")[0] for n in tests if "::" in n}):
        if any(f"{mod}::" in n and not n.startswith(f"{mod}::") for n in tests):
            sys.exit(f"test.sh: the filter {mod}:: of {name} would pick tests of other modules")
        lists[where].append(f"{name}::{mod}\t{exe}\t{mod}::\n")
    if any("::" not in n for n in tests):
        sys.exit(f"test.sh: {name} has tests outside its modules, which no line would run")
missing = {"hermetic", "cluster", "simulation", "big"} - seen
if missing:
    sys.exit(f"test.sh: cargo built no test executable {' '.join(sorted(missing))}")
for k, v in lists.items():
    open(os.path.join(out, f"tests.{k}"), "w").writelines(sorted(v))
PY
    SC_INSTALL_ROOT=$root scripts/install.sh release
    install -d -m 0755 "$root$SC_CLUSTER_DIR/fake-nvml"
    tests/fake-nvml/build.sh "$root$SC_CLUSTER_DIR/fake-nvml"
    rm -rf "$root$SC_CLUSTER_DIR/state" "$root$SC_CLUSTER_DIR/jobs" "$root$SC_CLUSTER_DIR/fake-nvml/reads.log"
    step "Slurm $v: the .deb and .rpm (scripts/package-test.sh; the release build above is reused)"
    scripts/package-test.sh --slurm "$v" --out "$out/packages"
}

# suite VERSION [NODES LIST ARG...]: (re)start the release's cluster with NODES nodes in its
# namespaces and run the test executables of LIST there.
suite() {
    local v=$1 nodes=${2:-4} list=${3:-all}
    shift 3 || shift $#
    local in=(scripts/slurm-root.sh exec "$v")
    "${in[@]}" scripts/cluster.sh stop >/dev/null 2>&1 || true
    SC_NODES=$nodes SC_PLUGSTACK=$plugstack "${in[@]}" scripts/cluster.sh start || return 1
    "${in[@]}" scripts/run-tests.sh "$matrix/$v/tests.$list" "$@"
}

for v in "${versions[@]}"; do build "$v"; done

step "starting the clusters; the end-to-end suites of ${versions[*]} at the same time"
declare -A pids result
for v in "${versions[@]}"; do
    scripts/slurm-root.sh down "$v" >/dev/null 2>&1 || true
    scripts/slurm-root.sh up "$v"
    up+=("$v")
    suite "$v" 4 all --skip bench >"$matrix/$v/test.log" 2>&1 &
    pids[$v]=$!
done
failed=0
for v in "${versions[@]}"; do
    if wait "${pids[$v]}"; then result[$v]="tests passed"; else result[$v]="tests FAILED"; failed=1; fi
    echo "Slurm $v: ${result[$v]} ($(grep -c '^test .* ok$' "$matrix/$v/test.log" || true) tests ok; log $matrix/$v/test.log)"
done

# The Debian package as an operator installs it: a clean 24.11 root, dpkg -i, the drop-in's one step.
if [[ " ${versions[*]} " == *" 24.11 "* ]]; then
    step "Slurm 24.11: the .deb installed in a clean root and enabled by its one step (scripts/package-e2e.sh)"
    if scripts/package-e2e.sh 24.11 "$matrix/24.11/packages" >"$matrix/24.11/package-e2e.log" 2>&1; then
        result[24.11]+=", package installed and recorded a job"
        tail -n 1 "$matrix/24.11/package-e2e.log"
    else
        result[24.11]+=", package end-to-end FAILED"
        failed=1
        tail -n 40 "$matrix/24.11/package-e2e.log"
    fi
fi

for v in "${versions[@]}"; do
    if ((big_nodes >= 64)); then
        step "Slurm $v: tests/big.rs on a cluster of $big_nodes nodes"
        if suite "$v" "$big_nodes" big --nocapture 2>&1 | tee "$matrix/$v/big.log"; then
            result[$v]+=", 64-node job passed"
        else
            result[$v]+=", 64-node job FAILED"
            failed=1
        fi
    fi
    scripts/slurm-root.sh down "$v"
done

for v in "${versions[@]}"; do
    step "Slurm $v: the end-to-end suite's output"
    cat "$matrix/$v/test.log"
done
step "summary"
for v in "${versions[@]}"; do echo "Slurm $v: ${result[$v]}"; done
exit $failed
