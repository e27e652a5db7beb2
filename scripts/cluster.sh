#!/usr/bin/env bash
# A real multi-node Slurm 22.05 cluster (Debian bookworm packages) on one machine, for tests.
#
#   cluster.sh install                   install the Debian packages (needs root; no-op when present)
#   cluster.sh start                     write configs, start munged, MariaDB, slurmdbd, slurmctld and
#                                        $SC_NODES slurmd (default four: node1..node4); wait until all
#                                        nodes are idle and `srun -N$SC_NODES true` works
#   cluster.sh stop                      stop every daemon (slurmd, slurmctld, slurmdbd, MariaDB, munged)
#   cluster.sh restart-slurmd [nodeN..]  restart the given slurmd (default all) and wait until they have
#                                        re-registered and are idle (slurmd reads plugstack.conf at start)
#   cluster.sh wait-idle                 wait until squeue is empty and every node is idle
#   cluster.sh status                    show the daemons and sinfo
#   cluster.sh stop-dbd | start-dbd      stop or start slurmdbd alone (accounting down while jobs end)
#   cluster.sh pause-dbd | resume-dbd    SIGSTOP or SIGCONT slurmdbd (by its pid file): accounting hangs
#                                        (connections open, no answer) instead of refusing
#   cluster.sh restart-ctld-clean [FIRST] stop slurmctld, wipe its StateSaveLocation and start it with -c,
#                                        as after a controller's state loss: job ids restart from
#                                        FIRST (FirstJobId, default 1) while accounting keeps the old
#                                        jobs; running jobs are lost; waits until the nodes are idle
#   cluster.sh mem                       the slurmd processes' memory (RSS, PSS) and the host's available
#   cluster.sh fake-driver               present the NVIDIA driver's files that Slurm's AutoDetect and MIG
#                                        read, for $SC_FAKE_GPUS (below): /dev/nvidiaN and
#                                        /dev/nvidia-caps/nvidia-capN devices, /proc/driver/nvidia/gpus/*/
#                                        information, /proc/driver/nvidia-caps/mig-minors, an nvidia-caps
#                                        line in /proc/devices, /sys/bus/pci/drivers/nvidia/*/local_cpulist.
#                                        Only inside scripts/slurm-root.sh's namespaces (private mounts: /dev
#                                        gets an overlay, /proc/driver and the PCI drivers a tmpfs), never
#                                        on this machine's own; run again to replace them
#
# Environment:
#   SC_CLUSTER_DIR   state, spool, logs, pid files, fake GPU devices
#                    (default /var/lib/spank-carbon-cluster); logs in $SC_CLUSTER_DIR/log/
#   SC_PLUGSTACK     if set, its content is written to /etc/slurm/plugstack.conf by `start`;
#                    otherwise an existing plugstack.conf is left alone (an empty one is created if missing)
#   SC_NODES         number of nodes for `start`: node1..node$SC_NODES (default 4, at most 256), each
#                    slurmd on port 17000+i; other commands act on the nodes of the slurm.conf that
#                    `start` wrote (SC_NODES, if set, overrides)
#   SC_TIMEOUT       seconds for each bounded wait (default 60); waits on every node (registration,
#                    `srun -N`, idle) get 3 s more per node beyond four
#   SC_PROLOG_FLAGS  slurm.conf's PrologFlags (default Alloc; empty: none)
#   SC_GPU_MINORS    device minors of the files nvidia0..nvidia3 (default "2 0 3 1")
#   SC_GRES_CONF     if set, gres.conf's whole text (default: File= lines for the four fake GPUs)
#   SC_NODE_GRES     the nodes' Gres= in slurm.conf (default gpu:4)
#   SC_GRES_TYPES    slurm.conf's GresTypes (default gpu)
#   SC_SLURM_EXTRA   lines added at the end of slurm.conf (e.g. MailProg=..., Prolog=...)
#   SC_FAKE_GPUS     for fake-driver: "BUS:MINOR:MODEL ..." (BUS like 0000:41:00.0), one a board
#   SC_FAKE_MIG      for fake-driver: mig-minors entries "gpu0/gi1/access=21 gpu0/gi1/ci0/access=22 ..."
#                    (each also gets /dev/nvidia-caps/nvidia-cap<minor>, major $FAKE_CAPS_MAJOR)
#
# Layout: configs in /etc/slurm (slurm.conf, gres.conf, cgroup.conf, slurmdbd.conf, plugstack.conf), so every
# Slurm command finds them by default. Nodes are node1..node$SC_NODES (default node1..node4), all on 127.0.0.1
# with distinct ports, each with 4 CPUs and 4 fake GPUs ($SC_CLUSTER_DIR/dev/nodeN/nvidia[0-3], character
# devices 195:M with the minors M given by SC_GPU_MINORS, default "2 0 3 1": nvidia0 is 195:2, nvidia1 195:0,
# ...). Memory: an idle slurmd takes about 6 MB RSS (2.2 MB PSS, 1.6 MB private), so 64 take under 0.4 GB.
# Accounting: cluster sc, accounts research and heavy; root (default research) and scuser in both.
# Test-only set-up: the database password below is not a secret.
set -euo pipefail

SC_CLUSTER_DIR=${SC_CLUSTER_DIR:-/var/lib/spank-carbon-cluster}
SC_TIMEOUT=${SC_TIMEOUT:-60}
DIR=$SC_CLUSTER_DIR
LOG=$DIR/log
RUN=$DIR/run
ETC=/etc/slurm
NODE_PORT_BASE=17001            # node1 -> 17001, node2 -> 17002, ...
CTLD_PORT=6817
DBD_PORT=6819
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=spank-carbon-test
# MariaDB's data directory, socket and pid file, as this MariaDB builds them in (Debian sid's live in
# /var/lib/mariadb and /run/mariadbd); read by mariadb_paths, since `install` may not have run yet.
MYSQL_SOCK=/run/mysqld/mysqld.sock
MYSQL_DATADIR=/var/lib/mysql
MYSQL_PID=/run/mysqld/mysqld.pid
MYSQL_SNAPSHOT_OPT=
mariadb_paths() {
    local help v
    help=$(mariadbd --verbose --help 2>/dev/null || mysqld --verbose --help 2>/dev/null || true)
    v=$(awk '$1 == "socket" && NF == 2 && $2 ~ /^\// { print $2; exit }' <<<"$help"); [[ $v == /* ]] && MYSQL_SOCK=$v
    v=$(awk '$1 == "datadir" && NF == 2 && $2 ~ /^\// { print $2; exit }' <<<"$help"); [[ $v == /* ]] && MYSQL_DATADIR=${v%/}
    v=$(awk '$1 == "pid-file" && NF == 2 && $2 ~ /^\// { print $2; exit }' <<<"$help"); [[ $v == /* ]] && MYSQL_PID=$v
    # MariaDB 11.8 (trixie, sid) turns innodb_snapshot_isolation on by default; Slurm's accounting
    # docs require it off (26.05.3+ slurmdbd stops on the error, 24.11 loses the transaction).
    if grep -q '^innodb-snapshot-isolation ' <<<"$help"; then
        MYSQL_SNAPSHOT_OPT=--innodb-snapshot-isolation=OFF
    fi
    return 0
}
# The Slurm release that runs here (slurmd -V: "slurm-wlm 24.11.5"), as a number like 2411: the
# configuration leaves out what a release no longer knows and adds what it needs.
slurm_release() {
    local v
    v=$(slurmd -V 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -n 1 || true)
    [[ $v =~ ^([0-9]+)\.([0-9]+)$ ]] || die "cannot read the Slurm version from 'slurmd -V'"
    echo $((10#${BASH_REMATCH[1]} * 100 + 10#${BASH_REMATCH[2]}))
}
# Device minor of gres file nvidia<i> (i = 0..3), the same on every node. Deliberately neither the
# gres index nor the identity, so a plugin that confuses gres index and /dev/nvidiaN minor shows;
# tests/common/mod.rs (minor_of_file) relies on this default.
read -r -a GPU_MINORS <<<"${SC_GPU_MINORS:-2 0 3 1}"
[[ ${#GPU_MINORS[@]} -eq 4 && "${GPU_MINORS[*]}" =~ ^[0-9]+( [0-9]+){3}$ ]] ||
    { echo "[cluster] ERROR: SC_GPU_MINORS must be four numbers, not '${SC_GPU_MINORS:-}'" >&2; exit 2; }

# The nodes: SC_NODES; else, except for `start`, as many as the slurm.conf that `start` wrote names
# (so that stop, wait-idle... act on a cluster started with another SC_NODES); else 4.
configured_nodes() {
    [[ -r $ETC/slurm.conf && $(head -n 1 "$ETC/slurm.conf") == *'Written by scripts/cluster.sh'* ]] || return 0
    grep -cE '^NodeName=node[0-9]+ NodeAddr=127\.0\.0\.1 ' "$ETC/slurm.conf" || true
}
NODE_COUNT=${SC_NODES:-}
if [[ -z $NODE_COUNT && ${1:-} != start ]]; then
    NODE_COUNT=$(configured_nodes)
    [[ $NODE_COUNT =~ ^[1-9][0-9]*$ ]] || NODE_COUNT=
fi
NODE_COUNT=${NODE_COUNT:-4}
if ! [[ $NODE_COUNT =~ ^[1-9][0-9]*$ ]] || ((NODE_COUNT > 256)); then
    echo "[cluster] ERROR: SC_NODES must be a number from 1 to 256, not '$NODE_COUNT'" >&2
    exit 2
fi
NODES=()
for ((i = 1; i <= NODE_COUNT; i++)); do NODES+=("node$i"); done
unset i
# Waits that involve every node (registration, srun -N, idle) grow by 3 s per node beyond four: 64 slurmd
# registering and starting job steps on two cores take a while.
EXTRA_WAIT=$((NODE_COUNT > 4 ? 3 * (NODE_COUNT - 4) : 0))
NODE_TIMEOUT=$((SC_TIMEOUT + EXTRA_WAIT))
SRUN_TIMEOUT=$((60 + EXTRA_WAIT))
# libclang-dev: bindgen needs it to build the plugin; gcc builds the fake libnvidia-ml; prometheus:
# promtool, which tests/hermetic/metrics.rs runs on the textfile.
PACKAGES=(slurm-wlm slurmdbd mariadb-server mariadb-client munge libslurm-dev libclang-dev gcc libc6-dev procps passwd util-linux coreutils
    prometheus)

msg() { echo "[cluster] $*"; }
warn() { echo "[cluster] WARNING: $*" >&2; }
die() { echo "[cluster] ERROR: $*" >&2; exit 1; }

# Print the last lines of the given log files (those that exist) to stderr.
tails() {
    local f
    for f in "$@"; do
        if [[ -f $f ]]; then
            echo "----- last 30 lines of $f -----" >&2
            tail -n 30 "$f" >&2 || true
        else
            echo "----- $f: (missing) -----" >&2
        fi
    done
}

# fail MESSAGE LOGFILE...: print the log tails and exit non-zero.
fail() {
    local m=$1
    shift
    echo "[cluster] ERROR: $m" >&2
    if [[ -n $LAST_OUT ]]; then
        echo "----- output of the last check -----" >&2
        tail -n 15 <<<"$LAST_OUT" >&2
    fi
    tails "$@"
    exit 1
}

# wait_until SECONDS COMMAND...: run COMMAND every 0.5 s until it succeeds; 1 on timeout, with the
# last attempt's output in LAST_OUT (fail prints it).
wait_until() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    while true; do
        if LAST_OUT=$("$@" 2>&1); then
            LAST_OUT=
            return 0
        fi
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}
LAST_OUT=

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# pid_of PIDFILE: the pid in it if that process is alive.
pid_of() {
    local pf=$1 pid
    [[ -r $pf ]] || return 1
    pid=$(tr -dc '0-9' <"$pf" 2>/dev/null || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# Run a Slurm client command with a hard time limit.
sl() { timeout 20 "$@"; }

# ---------------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------------
cmd_install() {
    need_root
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        msg "all packages installed: ${PACKAGES[*]}"
        return 0
    fi
    msg "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when some package has no install candidate (fresh machine).
    local need_update=0
    for p in "${missing[@]}"; do
        if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then need_update=1; fi
    done
    if ((need_update)); then
        msg "apt-get update"
        apt-get update
    fi
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        # Stale lists (404s): refresh once and retry.
        msg "install failed; apt-get update and retry"
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    msg "installed"
}

# ---------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------
check_installed() {
    local b
    for b in munged mysqld_safe mariadb mariadb-admin slurmdbd slurmctld slurmd sacctmgr sinfo srun \
        runuser setsid pgrep; do
        command -v "$b" >/dev/null 2>&1 || die "$b not found: run '$0 install' first"
    done
}

# write_file FILE MODE OWNER: stdin -> FILE, only when the content differs (then CONF_CHANGED=1).
CONF_CHANGED=0
write_file() {
    local f=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$f.XXXXXX")
    cat >"$tmp"
    if [[ -f $f ]] && cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$f"
        CONF_CHANGED=1
    fi
    chmod "$mode" "$f"
    chown "$owner" "$f"
}

make_dirs() {
    install -d -m 0755 "$DIR" "$DIR/dev" "$DIR/spool"
    install -d -m 0755 -o slurm -g slurm "$LOG" "$RUN" "$DIR/ctld"
    install -d -m 0755 -o mysql -g mysql "$(dirname "$MYSQL_SOCK")" "$(dirname "$MYSQL_PID")"
    install -d -m 0755 -o munge -g munge /run/munge /var/lib/munge /var/log/munge
    install -d -m 0755 "$ETC"
    runuser -u slurm -- test -w "$DIR/ctld" -a -w "$LOG" ||
        die "user slurm cannot write under $DIR: choose an SC_CLUSTER_DIR whose parents are world-searchable"
    local n i dev minor
    for n in "${NODES[@]}"; do
        install -d -m 0755 "$DIR/spool/$n" "$DIR/dev/$n"
        for i in 0 1 2 3; do
            dev=$DIR/dev/$n/nvidia$i
            minor=${GPU_MINORS[$i]}
            if [[ ! -c $dev || $(stat -c '%t:%T' "$dev") != "$(printf '%x:%x' 195 "$minor")" ]]; then
                rm -f "$dev"
                mknod -m 0666 "$dev" c 195 "$minor" || die "mknod $dev failed (need CAP_MKNOD)"
            fi
        done
    done
}

write_configs() {
    local host
    host=$(uname -n)
    host=${host%%.*}
    local nodelines="" i=0 n
    for n in "${NODES[@]}"; do
        nodelines+="NodeName=$n NodeAddr=127.0.0.1 NodeHostname=$n Port=$((NODE_PORT_BASE + i))"$'\n'
        i=$((i + 1))
    done
    # Up to four nodes listed by name (as always); more as a host list, node[1-N].
    local partition_nodes
    if ((${#NODES[@]} <= 4)); then
        partition_nodes=$(IFS=,; echo "${NODES[*]}")
    else
        partition_nodes="node[1-${#NODES[@]}]"
    fi

    # SC_PROLOG_FLAGS (default Alloc; empty for none) lets tests run without PrologFlags=Alloc.
    local PROLOG_FLAGS_LINE="# PrologFlags: none"
    [[ -n ${SC_PROLOG_FLAGS-Alloc} ]] && PROLOG_FLAGS_LINE="PrologFlags=${SC_PROLOG_FLAGS-Alloc}"
    # What differs between the Slurm releases the tests run (22.05, 24.11, 26.05): switch/none is gone
    # from 23.02; 24.11+ wants UnkillableStepTimeout >= 5 x MessageTimeout; cgroup.conf: below.
    local rel SWITCH_LINE="SwitchType=switch/none" UNKILLABLE=30
    rel=$(slurm_release)
    # SC_SLURM_EXTRA may set MailProg itself.
    local SC_MAIL_LINE="MailProg=/bin/true"
    [[ ${SC_SLURM_EXTRA:-} != *MailProg=* ]] || SC_MAIL_LINE="# MailProg: in SC_SLURM_EXTRA"
    ((rel < 2302)) || SWITCH_LINE="# SwitchType: switch/none is gone from 23.02"
    ((rel < 2411)) || UNKILLABLE=60
    write_file "$ETC/slurm.conf" 0644 root:root <<EOF
# Written by scripts/cluster.sh (spank-carbon test cluster); rewritten on every start.
ClusterName=sc
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
${SC_MAIL_LINE}
${SWITCH_LINE}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=${SC_GRES_TYPES:-gpu}
${PROLOG_FLAGS_LINE}
PlugStackConfig=$ETC/plugstack.conf
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=5,sched_min_interval=0,bf_interval=5
PriorityType=priority/multifactor
PriorityWeightFairshare=10000
PriorityWeightAge=0
PriorityWeightJobSize=0
PriorityWeightPartition=0
PriorityWeightQOS=0
PriorityCalcPeriod=1
ReturnToService=2
JobRequeue=0
# Longer than PriorityCalcPeriod (60 s), so that a completed job is still known to
# slurmctld at the next priority decay pass.
MinJobAge=120
KillWait=2
InactiveLimit=0
Waittime=0
OverTimeLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
BatchStartTimeout=20
UnkillableStepTimeout=${UNKILLABLE}
NodeName=DEFAULT CPUs=4 Sockets=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000 Gres=${SC_NODE_GRES:-gpu:4} State=UNKNOWN
${nodelines}PartitionName=gpu Nodes=${partition_nodes} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
${SC_SLURM_EXTRA:-}
EOF

    local gres="# Written by scripts/cluster.sh: fake GPUs nvidia0..3 = character devices 195:{${GPU_MINORS[*]}}."$'\n'"AutoDetect=off"
    for n in "${NODES[@]}"; do
        gres+=$'\n'"NodeName=$n Name=gpu File=$DIR/dev/$n/nvidia[0-3]"
    done
    [[ -z ${SC_GRES_CONF:-} ]] || gres="# Written by scripts/cluster.sh from SC_GRES_CONF."$'\n'"$SC_GRES_CONF"
    write_file "$ETC/gres.conf" 0644 root:root <<<"$gres"

    # slurmd 22.05 always initialises a cgroup plugin; "autodetect" (the default) fails where no cgroup
    # file system is mounted, and cgroup/v2 wants systemd or a writable hierarchy. cgroup/v1's
    # initialisation touches nothing, and with proctrack/linuxproc, task/none and jobacct_gather/none
    # nothing else uses cgroups, so this works on v1, v2 and cgroup-less machines alike.
    # From 24.05 `CgroupPlugin=disabled` says so outright (CgroupAutomount is defunct from 23.11).
    local cgroup_conf=$'CgroupPlugin=cgroup/v1\nCgroupAutomount=no'
    ((rel < 2405)) || cgroup_conf=CgroupPlugin=disabled
    write_file "$ETC/cgroup.conf" 0644 root:root <<EOF
# Written by scripts/cluster.sh (spank-carbon test cluster).
$cgroup_conf
EOF

    write_file "$ETC/slurmdbd.conf" 0600 slurm:slurm <<EOF
# Written by scripts/cluster.sh (spank-carbon test cluster).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

    if [[ -n ${SC_PLUGSTACK+set} ]]; then
        # (no pipe: write_file must run in this shell to set CONF_CHANGED)
        write_file "$ETC/plugstack.conf" 0644 root:root <<<"$SC_PLUGSTACK"
        msg "plugstack.conf written from SC_PLUGSTACK"
    elif [[ ! -e $ETC/plugstack.conf ]]; then
        write_file "$ETC/plugstack.conf" 0644 root:root </dev/null
    fi
}

# ---------------------------------------------------------------------------------------------------
# daemons
# ---------------------------------------------------------------------------------------------------
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        msg "creating /etc/munge/munge.key"
        install -d -m 0700 -o munge -g munge /etc/munge
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    if pgrep -x munged >/dev/null && munge_ok 2>/dev/null; then
        msg "munged already running"
        return 0
    fi
    msg "starting munged"
    touch "$LOG/munged.log" && chown munge:munge "$LOG/munged.log" && chmod 0640 "$LOG/munged.log"
    # -f: the log directory may be group-writable in some containers; this is a test cluster.
    runuser -u munge -- /usr/sbin/munged -f --log-file="$LOG/munged.log" </dev/null >/dev/null 2>&1 ||
        fail "munged failed to start" "$LOG/munged.log"
    wait_until "$SC_TIMEOUT" munge_ok || fail "munge does not answer" "$LOG/munged.log"
}

db_ok() { mariadb-admin --socket="$MYSQL_SOCK" -uroot ping; }

start_mariadb() {
    if db_ok >/dev/null 2>&1; then
        msg "MariaDB already running"
    else
        if [[ ! -d $MYSQL_DATADIR/mysql ]]; then
            msg "initialising the MariaDB data directory"
            mariadb-install-db --user=mysql --datadir="$MYSQL_DATADIR" >"$LOG/mariadb-install.log" 2>&1 ||
                fail "mariadb-install-db failed" "$LOG/mariadb-install.log"
        fi
        msg "starting MariaDB"
        touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
        setsid mysqld_safe --user=mysql --skip-syslog --log-error="$LOG/mariadb.log" $MYSQL_SNAPSHOT_OPT \
            </dev/null >>"$LOG/mysqld_safe.out" 2>&1 &
        wait_until "$SC_TIMEOUT" db_ok || fail "MariaDB does not answer" "$LOG/mariadb.log" "$LOG/mysqld_safe.out"
    fi
    mariadb --socket="$MYSQL_SOCK" -uroot <<EOF || fail "creating the database failed" "$LOG/mariadb.log"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

dbd_ok() { sl sacctmgr -n -P list cluster format=cluster; }

start_slurmdbd() {
    if pid_of "$RUN/slurmdbd.pid" >/dev/null; then
        msg "slurmdbd already running"
        continue_dbd || true # in case pause-dbd stopped it
    else
        msg "starting slurmdbd"
        touch "$LOG/slurmdbd.log" && chown slurm:slurm "$LOG/slurmdbd.log"
        runuser -u slurm -- slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 ||
            fail "slurmdbd failed to start" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"
    fi
    # The first start creates the tables: allow the full timeout.
    wait_until "$SC_TIMEOUT" dbd_ok || fail "slurmdbd does not answer" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"
}

# sacctmgr -i add ...; "Nothing new added" (already there) is fine.
acct_add() {
    local out
    if ! out=$(sl sacctmgr -i "$@" 2>&1); then
        if ! grep -qiE 'nothing new added|already exists' <<<"$out"; then
            echo "$out" >&2
            fail "sacctmgr $* failed" "$LOG/slurmdbd.log"
        fi
    fi
}

setup_accounting() {
    id scuser >/dev/null 2>&1 || {
        msg "creating Unix user scuser"
        useradd -m -s /bin/bash scuser
    }
    local clusters accounts
    clusters=$(sl sacctmgr -n -P list cluster format=cluster)
    grep -qx sc <<<"$clusters" || acct_add add cluster sc
    accounts=$(sl sacctmgr -n -P list account format=account)
    grep -qx research <<<"$accounts" || acct_add add account research cluster=sc parent=root \
        description=research organization=sc
    grep -qx heavy <<<"$accounts" || acct_add add account heavy cluster=sc parent=root \
        description=heavy organization=sc
    local u
    for u in root scuser; do
        local have
        have=$(sl sacctmgr -n -P list assoc cluster=sc user=$u format=account)
        grep -qx research <<<"$have" || acct_add add user $u account=research defaultaccount=research cluster=sc
        grep -qx heavy <<<"$have" || acct_add add user $u account=heavy cluster=sc
        if [[ $(sl sacctmgr -n -P list user $u format=defaultaccount) != research ]]; then
            acct_add modify user where name=$u set defaultaccount=research
        fi
    done
}

# start_slurmctld [ARG...]: start slurmctld (with ARG..., e.g. -c) unless it runs; wait until it is UP.
start_slurmctld() {
    if pid_of "$RUN/slurmctld.pid" >/dev/null; then
        msg "slurmctld already running"
    else
        msg "starting slurmctld${*:+ $*}"
        touch "$LOG/slurmctld.log" && chown slurm:slurm "$LOG/slurmctld.log"
        # Started as root, slurmctld switches to SlurmUser=slurm itself.
        slurmctld "$@" </dev/null >>"$LOG/slurmctld.out" 2>&1 ||
            fail "slurmctld failed to start" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    fi
    wait_until "$SC_TIMEOUT" sl scontrol ping ||
        fail "slurmctld does not answer" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    # scontrol ping exits 0 even when DOWN on some versions: check the text.
    wait_until "$SC_TIMEOUT" bash -c 'timeout 10 scontrol ping | grep -q "is UP"' ||
        fail "slurmctld is not UP" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
}

start_slurmd() {
    local n
    for n in "$@"; do
        if pid_of "$RUN/slurmd-$n.pid" >/dev/null; then
            msg "slurmd $n already running"
            continue
        fi
        msg "starting slurmd $n"
        install -d -m 0755 "$DIR/spool/$n"
        setsid slurmd -N "$n" </dev/null >>"$LOG/$n.out" 2>&1 ||
            fail "slurmd $n failed to start" "$LOG/$n.log" "$LOG/$n.out"
    done
}

node_logs() {
    local n out=()
    for n in "$@"; do out+=("$LOG/$n.log"); done
    echo "${out[@]}"
}

# nodes_idle NODE...: every given node is exactly "idle" (no *, no drain).
nodes_idle() {
    local states n s
    states=$(sl sinfo -h -N -o '%N %T') || return 1
    for n in "$@"; do
        s=$(awk -v n="$n" '$1 == n { print $2; exit }' <<<"$states")
        [[ $s == idle ]] || return 1
    done
}

# Nodes left drained by an earlier run (a failing epilog, a killed slurmd) are resumed.
resume_drained() {
    local drained
    drained=$(sl sinfo -h -N -t drain,drained,draining,fail,down -o '%N' | sort -u | paste -sd, || true)
    if [[ -n $drained ]]; then
        msg "resuming nodes: $drained"
        sl scontrol update nodename="$drained" state=resume 2>/dev/null || true
    fi
}

wait_nodes_idle() {
    local start=$SECONDS end=$((SECONDS + NODE_TIMEOUT)) resumed=0
    while ! nodes_idle "$@"; do
        if ((SECONDS >= end)); then
            sl sinfo -N -l >&2 || true
            # shellcheck disable=SC2046
            fail "nodes $* not idle after ${NODE_TIMEOUT}s" "$LOG/slurmctld.log" $(node_logs "$@")
        fi
        # Give the nodes a few seconds to register before resuming drained/down ones.
        if ((!resumed && SECONDS >= start + 5)); then
            resume_drained
            resumed=1
        fi
        sleep 0.5
    done
}

cmd_start() {
    need_root
    check_installed
    local t0=$SECONDS old_nodes
    # The node count of the cluster configured before (empty if none): a change needs slurmctld
    # restarted (scontrol reconfigure does not add or remove nodes) and surplus slurmd stopped.
    old_nodes=$(configured_nodes)
    [[ $old_nodes =~ ^[1-9][0-9]*$ && $old_nodes != "${#NODES[@]}" ]] || old_nodes=
    make_dirs
    local old_conf
    old_conf=$(cat "$ETC/slurm.conf" 2>/dev/null || true)
    write_configs
    # Slurm before 24.05 does not take a node's changed Gres= from `scontrol reconfigure` (the
    # node registers with the new count and is set INVAL): restart slurmctld instead.
    local ctld_restart=0
    [[ $old_conf == "$(cat "$ETC/slurm.conf")" ]] || (($(slurm_release) >= 2405)) || ctld_restart=1
    start_munge
    start_mariadb
    start_slurmdbd
    setup_accounting
    local ctld_was_running=0 running=() n
    pid_of "$RUN/slurmctld.pid" >/dev/null && ctld_was_running=1
    start_slurmctld
    if ((!ctld_was_running)); then
        # Jobs recovered from the saved state belong to an earlier run: start from an empty queue.
        local old
        old=$(sl squeue -h -o '%i' | paste -sd' ' || true)
        if [[ -n $old ]]; then
            msg "cancelling jobs left from an earlier run: $old"
            # shellcheck disable=SC2086
            sl scancel $old || true
        fi
    fi
    if [[ -n $old_nodes ]] && ((old_nodes > ${#NODES[@]})); then
        local surplus=() i
        for ((i = ${#NODES[@]} + 1; i <= old_nodes; i++)); do surplus+=("node$i"); done
        stop_slurmd "${surplus[@]}"
    fi
    if ((CONF_CHANGED && ctld_was_running)) && [[ -n $old_nodes ]]; then
        msg "node count changed ($old_nodes -> ${#NODES[@]}): restarting slurmctld"
        stop_named slurmctld "$RUN/slurmctld.pid"
        start_slurmctld
    elif ((ctld_restart && ctld_was_running)); then
        msg "slurm.conf changed: restarting slurmctld (before 24.05, reconfigure keeps the nodes' old Gres)"
        stop_named slurmctld "$RUN/slurmctld.pid"
        start_slurmctld
    elif ((CONF_CHANGED && ctld_was_running)); then
        msg "configuration changed: scontrol reconfigure"
        sl scontrol reconfigure || fail "scontrol reconfigure failed" "$LOG/slurmctld.log"
    fi
    if ((CONF_CHANGED)); then
        # slurmd reads plugstack.conf (and gres.conf) only at start: restart the running ones.
        for n in "${NODES[@]}"; do pid_of "$RUN/slurmd-$n.pid" >/dev/null && running+=("$n"); done
        if ((${#running[@]})); then
            msg "configuration changed: restarting slurmd ${running[*]}"
            stop_slurmd "${running[@]}"
        fi
    fi
    start_slurmd "${NODES[@]}"
    wait_nodes_idle "${NODES[@]}"
    msg "checking srun -N${#NODES[@]} true"
    local out
    if ! out=$(timeout "$SRUN_TIMEOUT" srun -N"${#NODES[@]}" true 2>&1); then
        echo "$out" >&2
        # shellcheck disable=SC2046
        fail "srun -N${#NODES[@]} true failed" "$LOG/slurmctld.log" $(node_logs "${NODES[@]}")
    fi
    # srun's job may still be completing: wait so callers start from an idle cluster.
    wait_idle
    msg "cluster sc is up ($((SECONDS - t0)) s): nodes ${NODES[*]}, logs in $LOG"
}

# ---------------------------------------------------------------------------------------------------
# stop
# ---------------------------------------------------------------------------------------------------
# stop_pids [-t SECONDS] NAME PID...: SIGTERM, wait (bounded, default 30 s), then SIGKILL.
stop_pids() {
    local limit=30
    if [[ $1 == -t ]]; then
        limit=$2
        shift 2
    fi
    local name=$1
    shift
    local pids=() p
    for p in "$@"; do [[ -n $p ]] && kill -0 "$p" 2>/dev/null && pids+=("$p"); done
    ((${#pids[@]})) || return 0
    msg "stopping $name (pid ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local end=$((SECONDS + limit)) alive
    while true; do
        alive=()
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
        ((${#alive[@]})) || return 0
        if ((SECONDS >= end)); then
            warn "$name did not stop within $limit s: SIGKILL ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            sleep 1
            return 0
        fi
        sleep 0.3
    done
}

# pids_named NAME: pids of processes whose name is exactly NAME.
pids_named() { pgrep -x "$1" || true; }

# stop_named [-t SECONDS] NAME [PIDFILE...]: stop the pids in the pid files and every process named NAME.
stop_named() {
    local opt=()
    if [[ $1 == -t ]]; then
        opt=(-t "$2")
        shift 2
    fi
    local name=$1
    shift
    local pids
    # shellcheck disable=SC2207
    pids=($( (for pf in "$@"; do pid_of "$pf" || true; done; pids_named "$name") | sort -u))
    if ((${#pids[@]})); then stop_pids "${opt[@]}" "$name" "${pids[@]}"; fi
}

stop_slurmd() {
    local n pids=()
    for n in "$@"; do
        local p
        p=$(pid_of "$RUN/slurmd-$n.pid" || true)
        [[ -n $p ]] && pids+=("$p")
    done
    if ((${#pids[@]})); then stop_pids "slurmd $*" "${pids[@]}"; fi
}

cmd_stop() {
    need_root
    # Cancel the jobs first so that slurmstepd kills their processes (linuxproc tracks them, no cgroups).
    if pid_of "$RUN/slurmctld.pid" >/dev/null && [[ -n $(timeout 10 squeue -h -o '%i' 2>/dev/null) ]]; then
        msg "cancelling all jobs"
        timeout 10 squeue -h -o '%i' 2>/dev/null | xargs -r timeout 10 scancel 2>/dev/null || true
        # shellcheck disable=SC2016
        wait_until 15 bash -c '[[ -z $(timeout 10 squeue -h -o %i) ]]' || warn "jobs still listed: stopping anyway"
    fi
    stop_slurmd "${NODES[@]}"
    stop_named slurmd
    # A paused slurmdbd (pause-dbd) would not see SIGTERM.
    continue_dbd || true
    # slurmstepd ignores SIGTERM
    stop_named -t 2 slurmstepd
    stop_named spank-carbon
    stop_named slurmctld "$RUN/slurmctld.pid"
    stop_named slurmdbd "$RUN/slurmdbd.pid"
    if db_ok >/dev/null 2>&1; then
        msg "stopping MariaDB"
        mariadb-admin --socket="$MYSQL_SOCK" -uroot shutdown >/dev/null 2>&1 || true
    fi
    stop_named mysqld_safe
    stop_named mariadbd "$MYSQL_PID"
    stop_named munged /run/munge/munged.pid
    msg "stopped"
}

# ---------------------------------------------------------------------------------------------------
# restart-slurmd, wait-idle, status
# ---------------------------------------------------------------------------------------------------
slurmd_start_time() { sl scontrol show node "$1" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' || true; }

cmd_restart_slurmd() {
    need_root
    local nodes=("$@") n
    ((${#nodes[@]})) || nodes=("${NODES[@]}")
    for n in "${nodes[@]}"; do
        [[ " ${NODES[*]} " == *" $n "* ]] || die "unknown node $n (nodes: ${NODES[*]})"
    done
    sl scontrol ping | grep -q "is UP" || die "slurmctld is not running: use '$0 start'"
    declare -A before
    for n in "${nodes[@]}"; do before[$n]=$(slurmd_start_time "$n"); done
    stop_slurmd "${nodes[@]}"
    sleep 1 # SlurmdStartTime has a resolution of one second
    start_slurmd "${nodes[@]}"
    # Wait until each slurmd has re-registered (new SlurmdStartTime), then until all are idle.
    local end=$((SECONDS + NODE_TIMEOUT))
    for n in "${nodes[@]}"; do
        while [[ $(slurmd_start_time "$n") == "${before[$n]}" ]]; do
            ((SECONDS < end)) || fail "slurmd $n did not re-register" "$LOG/$n.log" "$LOG/slurmctld.log"
            sleep 0.3
        done
    done
    wait_nodes_idle "${nodes[@]}"
    msg "slurmd restarted: ${nodes[*]}"
}

wait_idle() {
    local end=$((SECONDS + NODE_TIMEOUT))
    while true; do
        local q
        q=$(sl squeue -h -o '%i' 2>/dev/null) || q=error
        # Also wait for the slurmstepd processes: they linger a moment after the node shows idle.
        if [[ -z $q ]] && nodes_idle "${NODES[@]}" && ! pgrep -x slurmstepd >/dev/null; then return 0; fi
        if ((SECONDS >= end)); then
            sl squeue >&2 || true
            sl sinfo -N -l >&2 || true
            # shellcheck disable=SC2046
            fail "cluster not idle after ${NODE_TIMEOUT}s" "$LOG/slurmctld.log" $(node_logs "${NODES[@]}")
        fi
        sleep 0.5
    done
}

cmd_wait_idle() {
    sl scontrol ping 2>/dev/null | grep -q "is UP" || die "slurmctld is not running: use '$0 start'"
    wait_idle
    msg "idle"
}

# Stops or starts slurmdbd alone (fault tests: accounting unreachable while jobs end).
cmd_stop_dbd() {
    local pid
    pid=$(pid_of "$RUN/slurmdbd.pid") || { msg "slurmdbd not running"; return 0; }
    continue_dbd || true
    stop_pids slurmdbd "$pid"
}

# SIGCONT to slurmdbd if it runs (a no-op unless pause-dbd stopped it); 0 if it runs.
continue_dbd() {
    local pid
    pid=$(pid_of "$RUN/slurmdbd.pid") || return 1
    kill -CONT "$pid" 2>/dev/null || true
}

# Pauses or resumes slurmdbd (fault tests: accounting that hangs rather than refuses).
cmd_pause_dbd() {
    need_root
    local pid
    pid=$(pid_of "$RUN/slurmdbd.pid") || die "slurmdbd is not running"
    kill -STOP "$pid" || die "kill -STOP $pid failed"
    msg "slurmdbd paused (SIGSTOP, pid $pid): 'resume-dbd' resumes it"
}

cmd_resume_dbd() {
    need_root
    continue_dbd || die "slurmdbd is not running"
    wait_until "$SC_TIMEOUT" dbd_ok || fail "slurmdbd does not answer after SIGCONT" "$LOG/slurmdbd.log"
    msg "slurmdbd resumed"
}

# slurmctld as after the loss of its state: stopped, StateSaveLocation emptied, started with -c (no
# job, no node state recovered). Job ids restart from FirstJobId; accounting keeps the old jobs, so a
# new job gets the id of an old one.
cmd_restart_ctld_clean() {
    need_root
    check_installed
    local first=${1:-1}
    [[ $first =~ ^[1-9][0-9]{0,8}$ ]] || die "restart-ctld-clean: FIRST must be a job id, not '${first}'"
    stop_named slurmctld "$RUN/slurmctld.pid"
    sed -i '/^FirstJobId=/d' "$ETC/slurm.conf"
    echo "FirstJobId=$first" >>"$ETC/slurm.conf"
    [[ -d $DIR/ctld ]] || die "no StateSaveLocation $DIR/ctld"
    msg "wiping slurmctld's state in $DIR/ctld"
    find "$DIR/ctld" -mindepth 1 -delete
    start_slurmctld -c
    # The slurmd still run: they register again when slurmctld pings them (every SlurmdTimeout/3),
    # and steps of jobs that slurmctld no longer knows are killed. Allow a minute more for that.
    NODE_TIMEOUT=$((NODE_TIMEOUT + 60))
    wait_nodes_idle "${NODES[@]}"
    wait_idle
    msg "slurmctld restarted with a clean state; next job id: $(sl scontrol show config | awk '$1 == "NEXT_JOB_ID" { print $3 }')"
}

# The slurmd processes' memory: RSS (shared pages counted in each) and PSS (shared pages divided).
cmd_mem() {
    local pids p rss=0 pss=0 n=0 r q
    pids=$(pgrep -x slurmd || true)
    for p in $pids; do
        r=$(awk '$1 == "Rss:" { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        q=$(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        [[ -n $r && -n $q ]] || continue
        rss=$((rss + r))
        pss=$((pss + q))
        n=$((n + 1))
    done
    if ((n)); then
        echo "slurmd: $n processes, RSS $((rss / 1024)) MiB in all ($((rss / n)) KiB each), PSS $((pss / 1024)) MiB in all ($((pss / n)) KiB each)"
    else
        echo "slurmd: none running"
    fi
    awk '$1 == "MemAvailable:" { printf "host: %d MiB available\n", $2 / 1024 }' /proc/meminfo
}

cmd_start_dbd() {
    start_slurmdbd
    msg "slurmdbd up"
}

cmd_status() {
    local name pids rc=0
    for name in munged mariadbd slurmdbd slurmctld slurmd slurmstepd; do
        pids=$(pgrep -x "$name" | paste -sd' ' || true)
        printf '%-11s %s\n' "$name" "${pids:-(not running)}"
        [[ -n $pids || $name == slurmstepd ]] || rc=1
    done
    if pgrep -x slurmctld >/dev/null; then
        sl sinfo -N -o '%N %P %T %C %G' || rc=1
        sl squeue || rc=1
    fi
    echo "logs: $LOG"
    return $rc
}

# ---------------------------------------------------------------------------------------------------
# fake-driver: what the NVIDIA driver shows, for AutoDetect and MIG tests
# ---------------------------------------------------------------------------------------------------
FAKE_CAPS_MAJOR=508
cmd_fake_driver() {
    need_root
    grep -q spank-carbon-root-init /proc/1/cmdline 2>/dev/null ||
        die "fake-driver changes /dev, /proc and /sys: only inside scripts/slurm-root.sh's namespaces"
    local base=/run/sc-fake-driver
    if [[ ! -e /dev/.sc-fake-driver ]]; then
        # /dev: an overlay over this namespace's view, so device nodes made here stay here.
        install -d -m 0700 "$base"
        mount -t tmpfs -o mode=0700 tmpfs "$base"
        mkdir -p "$base/lower" "$base/up" "$base/work"
        mount --rbind /dev "$base/lower"
        mount -t overlay overlay -o "lowerdir=$base/lower,upperdir=$base/up,workdir=$base/work" /dev
        local m
        for m in pts shm mqueue hugepages; do
            if mountpoint -q "$base/lower/$m"; then mount --rbind "$base/lower/$m" "/dev/$m"; fi
        done
        touch /dev/.sc-fake-driver
        cp /proc/devices "$base/devices.orig"
        cp /proc/devices "$base/devices"
        mount --bind "$base/devices" /proc/devices
        mount -t tmpfs -o mode=0755 tmpfs /proc/driver
        mount -t tmpfs -o mode=0755 tmpfs /sys/bus/pci/drivers
    fi
    # nvidia-caps goes at the end of the "Character devices:" section, where the driver's is.
    awk -v line="$FAKE_CAPS_MAJOR nvidia-caps" '
        /^Block devices:/ && !done { print line; print ""; done = 1 }
        /^$/ && !done { next }
        { print }
        END { if (!done) print line }' "$base/devices.orig" >"$base/devices.new"
    cat "$base/devices.new" >"$base/devices"
    rm -f "$base/devices.new"
    rm -rf /proc/driver/nvidia /proc/driver/nvidia-caps /sys/bus/pci/drivers/nvidia /dev/nvidia-caps
    rm -f /dev/nvidia[0-9]* /dev/nvidiactl
    mkdir -p /proc/driver/nvidia/gpus /proc/driver/nvidia-caps /sys/bus/pci/drivers/nvidia /dev/nvidia-caps
    mknod -m 0666 /dev/nvidiactl c 195 255
    local g bus minor model
    for g in ${SC_FAKE_GPUS:-}; do
        IFS=: read -r d1 d2 d3 minor model <<<"$g"
        bus=$d1:$d2:$d3
        [[ $bus =~ ^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9]$ && $minor =~ ^[0-9]+$ && -n $model ]] ||
            die "SC_FAKE_GPUS: '$g' is not BUS:MINOR:MODEL"
        mkdir -p "/proc/driver/nvidia/gpus/$bus" "/sys/bus/pci/drivers/nvidia/$bus"
        printf 'Model: \t\t %s\nIRQ:   \t\t 100\nGPU UUID: \t GPU-fake-%s\nVideo BIOS: \t ??.??.??.??.??\nBus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\nBus Location: \t %s\nDevice Minor: \t %s\nGPU Excluded:\t No\n' \
            "${model//_/ }" "$minor" "$bus" "$minor" >"/proc/driver/nvidia/gpus/$bus/information"
        echo 0-3 >"/sys/bus/pci/drivers/nvidia/$bus/local_cpulist"
        mknod -m 0666 "/dev/nvidia$minor" c 195 "$minor"
    done
    : >/proc/driver/nvidia-caps/mig-minors
    local e name cap
    for e in ${SC_FAKE_MIG:-}; do
        name=${e%=*} cap=${e##*=}
        [[ $name =~ ^(config|monitor|gpu[0-9]+/gi[0-9]+(/ci[0-9]+)?/access)$ && $cap =~ ^[0-9]+$ ]] ||
            die "SC_FAKE_MIG: '$e' is not NAME=MINOR"
        echo "$name $cap" >>/proc/driver/nvidia-caps/mig-minors
        mknod -m 0444 "/dev/nvidia-caps/nvidia-cap$cap" c "$FAKE_CAPS_MAJOR" "$cap"
    done
    msg "fake driver: GPUs ${SC_FAKE_GPUS:-none}; MIG ${SC_FAKE_MIG:-none}"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

PATH=$PATH:/usr/sbin:/sbin
mariadb_paths
cmd=${1:-}
shift || true
case $cmd in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
restart-slurmd) cmd_restart_slurmd "$@" ;;
wait-idle) cmd_wait_idle ;;
stop-dbd) cmd_stop_dbd ;;
start-dbd) cmd_start_dbd ;;
pause-dbd) cmd_pause_dbd ;;
resume-dbd) cmd_resume_dbd ;;
restart-ctld-clean) cmd_restart_ctld_clean "$@" ;;
mem) cmd_mem ;;
status) cmd_status ;;
fake-driver) cmd_fake_driver ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
