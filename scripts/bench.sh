#!/usr/bin/env bash
# Measures what spank-carbon costs, side by side in one run, on the local cluster that
# scripts/cluster.sh starts (fake GPUs). Writes target/bench/results.md; BENCHMARKS.md
# holds the figures and the method. Needs root. Takes about 10 minutes.
#
#   1. the plugin's prolog and epilog (median, p99), called as slurmstepd calls them;
#      and the accounting write (sacct read + sacctmgr write round trip)
#   2. the sampler's CPU time per hour and resident memory with 1 and 8 GPUs at 1 s
#   3. job throughput with and without the plugin (hundreds of short GPU jobs)
#   4. srun start-up with and without the plugin loaded
#   5. a long fuzz run of the parsers (property tests)
#   6. the report over 100,000 job records
#   7. the whole epilog with a two-year, five-minute intensity series and a 30-day job
#   8. big jobs: time from a job's end to its whole record, and accounting calls per node, for
#      4, 16 and 64 nodes (a cluster of that many slurmd, each with its own state directory)
#   9. the merge protocol's deterministic simulation over many seeds, and its projection to
#      4,096 nodes
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SC_CLUSTER_DIR=${SC_CLUSTER_DIR:-/var/lib/spank-carbon-cluster}
N_CALLS=${N_CALLS:-200}
N_JOBS=${N_JOBS:-300}
SAMPLER_SECS=${SAMPLER_SECS:-120}
out=target/bench
mkdir -p "$out"
res=$out/results.md
fake=$SC_CLUSTER_DIR/fake-nvml
plugin=/usr/local/lib/spank-carbon/libspank_carbon.so

scripts/cluster.sh install
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine
cargo build --release --locked
scripts/install.sh release
install -d -m 0755 "$fake"
tests/fake-nvml/build.sh "$fake" >/dev/null
gcc -O2 -Wall -Werror -o "$out/call_plugin" scripts/bench/call_plugin.c -ldl

stats() { # file column -> "median p99 mean" in ms
    python3 - "$1" "$2" <<'PY'
import sys, statistics
col = int(sys.argv[2])
v = sorted(float(l.split()[col]) / 1e6 for l in open(sys.argv[1]) if l.strip())
p99 = v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]
print(f"{statistics.median(v):.2f} {p99:.2f} {statistics.mean(v):.2f} {len(v)}")
PY
}

{
    echo "# spank-carbon benchmark results"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), Slurm $(spank-carbon slurm-version), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
} >"$res"

# Fake GPUs: 8 on every node (1 to 8 used below).
{
    echo "epoch $(date +%s)"
    for n in 1 2 3 4 bench1 bench8; do
        for m in 0 1 2 3 4 5 6 7; do
            node=$n; [[ $n == [0-9] ]] && node=node$n
            printf 'gpu %s %d 0x%02x %d\n' "$node" "$m" $((0x10 + m)) $((200000 + 10000 * m))
        done
    done
} >"$fake/fake-nvml.conf"

# --- 1. prolog and epilog, in process ---------------------------------------------------------
bstate=$SC_CLUSTER_DIR/bench-state
rm -rf "$bstate"
SC_PLUGSTACK="optional $plugin nvml_lib=$fake/libnvidia-ml.so.1 state_dir=$SC_CLUSTER_DIR/state" scripts/cluster.sh start
"$out/call_plugin" "$plugin" "$N_CALLS" 0,1 300 "$out/calls.tsv" \
    "nvml_lib=$fake/libnvidia-ml.so.1" "state_dir=$bstate" sample_ms=1000 \
    sacct=/bin/true sacctmgr=/bin/true deliver_timeout_s=1 settle_ms=600000 2>"$out/calls.err"
read -r pm pp pa pn <<<"$(stats "$out/calls.tsv" 1)"
read -r em ep ea en <<<"$(stats "$out/calls.tsv" 2)"
sleep 3; pkill -x spank-carbon || true; rm -rf "$bstate"
# The accounting write: what the courier does for one record (read, merge, write; one read
# serves every record due in a round).
job=$(sbatch --parsable -o /dev/null --wrap true)
while squeue -h -j "$job" | grep -q .; do sleep 0.2; done
sleep 2
: >"$out/write.tsv"
for i in $(seq 50); do
    t0=$(date +%s%N)
    sacct -n -P -X -j "$job" -o JobIDRaw,JobID,State,SystemComment >/dev/null
    t1=$(date +%s%N)
    sacctmgr -i modify job where jobid="$job" set SystemComment="spank-carbon/1 gpu_wh=$i.5" >/dev/null
    t2=$(date +%s%N)
    echo "$i $((t1 - t0)) $((t2 - t1)) $((t2 - t0))" >>"$out/write.tsv"
done
# Lone jobs, one after another: from the epilog to the record in accounting.
since=$(date +%s)
for i in $(seq 10); do
    j=$(sbatch --parsable -o /dev/null --gres=gpu:1 --wrap true)
    while squeue -h -j "$j" 2>/dev/null | grep -q . || [[ -n $(ls -A "$SC_CLUSTER_DIR/state/pending") ]]; do
        sleep 0.1
    done
done
read -r lm lp lx ln <<<"$(python3 scripts/bench/latency.py "$since" "$SC_CLUSTER_DIR"/log/node?.log -- "$SC_CLUSTER_DIR/state/spank-carbon.log")"
read -r rm_ rp ra rn <<<"$(stats "$out/write.tsv" 1)"
read -r wm wp wa wn <<<"$(stats "$out/write.tsv" 2)"
read -r tm tp ta tn <<<"$(stats "$out/write.tsv" 3)"
{
    echo "## 1. Prolog and epilog ($pn jobs, 2 GPUs each, called in process as slurmstepd does)"
    echo
    echo "| | median ms | p99 ms | mean ms |"
    echo "|---|---|---|---|"
    echo "| prolog (gres mapping, state, start sampler) | $pm | $pp | $pa |"
    echo "| epilog (stop sampler, total, local record, queue for the courier) | $em | $ep | $ea |"
    echo "| accounting read (sacct) | $rm_ | $rp | $ra |"
    echo "| accounting write (sacctmgr) | $wm | $wp | $wa |"
    echo "| read + write, one round ($tn rounds) | $tm | $tp | $ta |"
    echo "| epilog + one read-write round | $(python3 -c "print(f'{$em+$tm:.2f}')") | | |"
    echo "| record in accounting after the epilog ($ln lone jobs, from the logs) | $(python3 -c "print(f'{1000*$lm:.0f}')") | $(python3 -c "print(f'{1000*$lp:.0f}')") (max) | |"
    echo
} >>"$res"

# --- 2. the sampler ------------------------------------------------------------------------
bstate=$SC_CLUSTER_DIR/bench-sampler
rm -rf "$bstate"; install -d -m 0700 "$bstate" "$bstate/jobs" "$bstate/records" "$bstate/pending"
pids=()
for g in 1 8; do
    install -d -m 0700 "$bstate/jobs/1.bench$g"
    minors=$(seq -s, 0 $((g - 1)))
    SLURMD_NODENAME=bench$g setsid spank-carbon sample --key "1.bench$g" --minors "$minors" -- \
        "nvml_lib=$fake/libnvidia-ml.so.1" "state_dir=$bstate" sample_ms=1000 liveness_s=86400 </dev/null >/dev/null 2>&1 &
    pids+=($!)
done
sleep 3
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A c0
for p in "${pids[@]}"; do c0[$p]=$(cpu "$p"); done
sleep "$SAMPLER_SECS"
{
    echo "## 2. Sampler at 1 s ($SAMPLER_SECS s measured, fake NVML)"
    echo
    echo "| GPUs | CPU s per hour | % of one core | VmRSS KiB | VmHWM KiB |"
    echo "|---|---|---|---|---|"
    i=0
    for g in 1 8; do
        p=${pids[$i]}
        ticks=$(($(cpu "$p") - ${c0[$p]}))
        hz=$(getconf CLK_TCK)
        rss=$(awk '/VmRSS/{print $2}' "/proc/$p/status")
        hwm=$(awk '/VmHWM/{print $2}' "/proc/$p/status")
        python3 -c "t=$ticks/$hz; h=t*3600/$SAMPLER_SECS; print(f'| $g | {h:.2f} | {100*h/3600:.4f} | $rss | $hwm |')"
        i=$((i + 1))
    done
    echo
} >>"$res"
kill "${pids[@]}" 2>/dev/null || true
sleep 1; rm -rf "$bstate"

# --- 3. throughput and 4. srun start-up, with and without the plugin ---------------------------
delivered() { # waits until no record is pending and no job state is left
    local end=$((SECONDS + 600))
    while { [[ -n $(ls -A "$SC_CLUSTER_DIR/state/pending" 2>/dev/null) ]] ||
        [[ -n $(ls -A "$SC_CLUSTER_DIR/state/jobs" 2>/dev/null) ]]; } && ((SECONDS < end)); do
        sleep 0.2
    done
}
throughput() { # -> "seconds to the last job's end, seconds until every record was delivered"
    local t0 t1 t2 array
    # One held array of N_JOBS tasks, released at once: the time is the cluster's, not
    # sbatch's (a loop of sbatch calls mostly measures submission).
    array=$(sbatch --parsable -H -o /dev/null --array=1-"$N_JOBS" --gres=gpu:1 --wrap true)
    sleep 2
    t0=$(date +%s.%N)
    scontrol release "$array"
    while squeue -h | grep -q .; do sleep 0.1; done
    t1=$(date +%s.%N)
    delivered
    t2=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f} {$t2 - $t0:.2f}')"
}
with_line="optional $plugin nvml_lib=$fake/libnvidia-ml.so.1 state_dir=$SC_CLUSTER_DIR/state"
declare -A tput srun_ms done_s lat
for mode in without with without with without with; do
    if [[ $mode == with ]]; then echo "$with_line" >/etc/slurm/plugstack.conf; else : >/etc/slurm/plugstack.conf; fi
    scripts/cluster.sh restart-slurmd >/dev/null
    scripts/cluster.sh wait-idle >/dev/null
    since=$(date +%s)
    read -r t d <<<"$(throughput)"
    if [[ $mode == with ]]; then
        lat[with]="${lat[with]:-}$(python3 scripts/bench/latency.py "$since" "$SC_CLUSTER_DIR"/log/node?.log -- "$SC_CLUSTER_DIR/state/spank-carbon.log");"
    fi
    tput[$mode]="${tput[$mode]:-} $t"
    done_s[$mode]="${done_s[$mode]:-} $d"
    # The courier leaves 10 s after its last record; srun is timed on a quiet node.
    while pgrep -x spank-carbon >/dev/null; do sleep 1; done
    scripts/cluster.sh wait-idle >/dev/null
    hyperfine -N -w 3 -r 30 --export-json "$out/srun-$mode.json" 'srun -N1 -w node2 true' >/dev/null
    srun_ms[$mode]="${srun_ms[$mode]:-} $(python3 -c "import json;print(f\"{json.load(open('$out/srun-$mode.json'))['results'][0]['median']*1000:.1f}\")")"
done
echo "$with_line" >/etc/slurm/plugstack.conf
scripts/cluster.sh restart-slurmd >/dev/null
{
    echo "## 3. Throughput: $N_JOBS jobs (one held array, --gres=gpu:1, 'true'), release to last job end; three rounds each, alternated"
    echo
    echo "| plugin | seconds to the last job's end (rounds) | median | jobs/s (median) | seconds until every record was delivered (rounds) |"
    echo "|---|---|---|---|---|"
    for mode in without with; do
        python3 -c "import statistics as st; v=[float(x) for x in '${tput[$mode]}'.split()]; d='${done_s[$mode]}'.split(); m=st.median(v); print(f'| $mode | {\", \".join(f\"{x:.2f}\" for x in v)} | {m:.2f} | {$N_JOBS/m:.1f} | {\", \".join(d) if \"$mode\" == \"with\" else \"-\"} |')"
    done
    python3 -c "import statistics as st; a=st.median(float(x) for x in '${tput[without]}'.split()); b=st.median(float(x) for x in '${tput[with]}'.split()); print(f'\nThroughput with the plugin (medians): {100*a/b:.1f}% of without.\n')"
    echo "Time from each job's epilog to its record in accounting (epilog line in slurmd's log to the"
    echo "courier's line in the state log), per round with the plugin: median, p99, max seconds, records:"
    echo
    echo "${lat[with]}" | tr ';' '\n' | sed '/^$/d; s/^/    /'
    echo
    echo "## 4. srun start-up: \`srun -N1 -w node2 true\`, hyperfine median of 30 runs, three rounds each"
    echo
    echo "| plugin | median ms (rounds) |"
    echo "|---|---|"
    echo "| without | ${srun_ms[without]} |"
    echo "| with | ${srun_ms[with]} |"
    echo
} >>"$res"

# --- 6. report over 100,000 records -----------------------------------------------------------
python3 - "$out/sacct-100k.txt" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for i in range(100_000):
        nodes = random.choice([1, 1, 1, 2, 4])
        parts = []
        total = co2e = 0.0
        for n in range(nodes):
            wh = random.uniform(1, 5000)
            total += wh; co2e += wh * 0.75
            parts.append(f"node.n{n:04d}=wh:{wh:.4f},gpus:4,co2e:{wh*0.75:.4f},m:counter,t:1795300000.0-1795303600.0,cov:1,pk:1400,src:fixed")
        rec = f"spank-carbon/1 gpu_wh={total:.4f} co2e_g={co2e:.4f} intensity=475 pue=1.58 gpus={4*nodes} nodes={nodes} of={nodes} method=counter " + " ".join(parts)
        f.write(f"{1000+i}|user{i%500}|acct{i%40}|gpu|COMPLETED|3600|billing=4,cpu=4,gres/gpu={4*nodes},node={nodes}|n0001|{rec}\n")
PY
hyperfine -N -w 1 -r 5 --export-json "$out/report-100k.json" \
    "spank-carbon report --by account --sacct-output $out/sacct-100k.txt" >/dev/null
rep_ms=$(python3 -c "import json;print(f\"{json.load(open('$out/report-100k.json'))['results'][0]['median']*1000:.0f}\")")
{
    echo "## 6. Report: totals per account over 100,000 job records (sacct's output from a file, $(du -m "$out/sacct-100k.txt" | cut -f1) MB)"
    echo
    echo "median of 5 runs: $rep_ms ms"
    echo
} >>"$res"

# --- 5. long fuzz run ----------------------------------------------------------------------
t0=$(date +%s)
PROPTEST_CASES=${PROPTEST_CASES:-20000} cargo test --release --locked --test hermetic properties:: >"$out/fuzz.log" 2>&1
t1=$(date +%s)
{
    echo "## 5. Fuzz (property tests) with PROPTEST_CASES=${PROPTEST_CASES:-20000}"
    echo
    echo "$(grep -E '^test result' "$out/fuzz.log" | tail -1) ($((t1 - t0)) s)"
} >>"$res"
# --- 7. the epilog with a two-year series ----------------------------------------------------
cargo test --release --locked --test series_cost -- --ignored --nocapture --test-threads=1 \
    >"$out/series.log" 2>&1
{
    echo "## 7. Epilog with a two-year, five-minute intensity series (210,240 points) and a 30-day job"
    echo
    grep -E "whole epilog|cached|no cache|sampler|old scan|parse" "$out/series.log" | sed 's/^/    /'
    echo
} >>"$res"

# --- 8. big jobs on 4, 16 and 64 nodes --------------------------------------------------------
{
    echo "## 8. Time from a job's end to its whole record, accounting calls per node (1 GPU per node)"
    echo
} >>"$res"
for n in ${BIG_NODES:-4 16 64}; do
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$SC_CLUSTER_DIR/state"
    SC_NODES=$n SC_PLUGSTACK="optional $plugin nvml_lib=$fake/libnvidia-ml.so.1 state_dir=$SC_CLUSTER_DIR/state/%n" \
        scripts/cluster.sh start >/dev/null
    SC_BIG_JOB_NODES=$n cargo test --release --locked --test big -- --include-ignored \
        --test-threads 1 --nocapture sixty_four >"$out/big-$n.log" 2>&1 || true
    {
        echo "- $n nodes: $(grep -h -E 'whole record|accounting calls|panicked' "$out/big-$n.log" | tr '\n' ' ')"
    } >>"$res"
done
echo >>"$res"
scripts/cluster.sh stop >/dev/null 2>&1 || true
SC_PLUGSTACK="optional $plugin nvml_lib=$fake/libnvidia-ml.so.1 state_dir=$SC_CLUSTER_DIR/state" \
    scripts/cluster.sh start >/dev/null

# --- 9. the merge protocol's simulation -------------------------------------------------------
t0=$(date +%s)
SIM_SEEDS=${SIM_SEEDS:-5000} cargo test --release --locked --test simulation sim_ -- --nocapture \
    >"$out/sim.log" 2>&1 || true
t1=$(date +%s)
: >"$out/sim-bench.log"
for n in ${SIM_BENCH_NODES:-4 16 64 256 1024}; do
    SIM_BENCH_NODES=$n cargo test --release --locked --test simulation bench -- --ignored --nocapture \
        >>"$out/sim-bench.log" 2>&1 || true
done
{
    echo "## 9. Deterministic simulation of delivery (SIM_SEEDS=${SIM_SEEDS:-5000}, $((t1 - t0)) s)"
    echo
    grep -E "^test result|seeds|FAILED|SIM_SEED" "$out/sim.log" | sed 's/^/    /'
    echo
    grep -vE "^\s*$|Compiling|Finished|Running|running|^test |warning" "$out/sim-bench.log" | sed 's/^/    /'
    echo
} >>"$res"
cat "$res"
