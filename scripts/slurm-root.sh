#!/usr/bin/env bash
# Other Slurm releases on this machine, for tests and the demo: each in a Debian root file system built
# here from Debian's archive, its daemons in their own network, mount, pid, UTS and IPC namespaces, so
# that its cluster cannot collide with this machine's (ports, sockets, pid files) or another's.
#
#   slurm-root.sh versions                 the releases: 22.05 (this machine, bookworm), 24.11 (trixie),
#                                          26.05 (sid)
#   slurm-root.sh root VERSION             print the root's path (empty for this machine's own release)
#   slurm-root.sh build VERSION            build the root (mmdebstrap; about a minute) unless it is there
#                                          with the same package list; 22.05: nothing to do
#   slurm-root.sh up VERSION               start the namespaces (a small init that reaps orphans, a
#                                          loopback with 127.0.0.2, private /run and /tmp, this checkout
#                                          and SC_ROOT_BIND paths bound at their own paths); for 22.05,
#                                          namespaces over this machine's own file system (no root; /tmp shared)
#   slurm-root.sh exec VERSION CMD [ARG..] run CMD in the namespaces, chrooted into the root, in the
#                                          current directory, with PATH, HOME and the SC_*, RUST_*
#                                          variables of this environment (22.05: this PATH, no chroot)
#   slurm-root.sh down VERSION             stop the cluster in it (scripts/cluster.sh stop), then end the
#                                          namespaces: every process still in them is killed
#   slurm-root.sh status VERSION           whether the namespaces are up
#
# The host sees the processes in the namespaces (and a host-wide pkill would kill them): stop them with
# `down`. Roots live in $SC_ROOTS (default /var/lib/spank-carbon-roots). Needs root.
set -euo pipefail

SC_ROOTS=${SC_ROOTS:-/var/lib/spank-carbon-roots}
RUNDIR=/run/spank-carbon-roots
MIRROR=${SC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# What a root needs: Slurm's daemons, clients and headers, MariaDB, munge; iproute2 for the loopback;
# prometheus for promtool (tests/hermetic/metrics.rs).
PACKAGES=(slurm-wlm slurmctld slurmd slurmdbd slurm-client slurm-wlm-mysql-plugin libslurm-dev
    mariadb-server mariadb-client munge procps iproute2 passwd util-linux prometheus)

die() { echo "[slurm-root] ERROR: $*" >&2; exit 1; }
msg() { echo "[slurm-root] $*"; }

# codename VERSION: the Debian suite that ships this Slurm release; "" for this machine's own.
codename() {
    case $1 in
    22.05) echo "" ;;
    24.11) echo trixie ;;
    26.05) echo sid ;;
    *) die "unknown Slurm version '$1' (have: 22.05 24.11 26.05)" ;;
    esac
}

# nsname VERSION: the name of its namespaces (the Debian suite; SC_NS_NAME overrides it, so that a
# second root of a release, e.g. scripts/package-e2e.sh's clean one, can be up beside the first).
nsname() {
    local c
    c=$(codename "$1")
    echo "${SC_NS_NAME:-${c:-bookworm}}"
}

root_of() {
    local c
    c=$(codename "$1")
    [[ -n $c ]] && echo "$SC_ROOTS/$c" || echo ""
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

cmd_build() {
    need_root
    local v=$1 c root stamp want
    c=$(codename "$v")
    [[ -n $c ]] || { msg "Slurm $v is this machine's own: no root to build"; return 0; }
    root=$SC_ROOTS/$c
    stamp=$root/.spank-carbon-root
    want="$c ${PACKAGES[*]}"
    if [[ -r $stamp && $(cat "$stamp") == "$want" ]]; then
        msg "root for Slurm $v ($c) is there: $root"
        return 0
    fi
    command -v mmdebstrap >/dev/null || {
        msg "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >/dev/null; }
    }
    install -d -m 0755 "$SC_ROOTS"
    rm -rf "$root.new"
    msg "building the root for Slurm $v from Debian $c (mmdebstrap)"
    local pkgs
    pkgs=$(IFS=,; echo "${PACKAGES[*]}")
    # sid's index on some mirrors is past its Valid-Until date.
    mmdebstrap --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"' --include="$pkgs" \
        "$c" "$root.new" "$MIRROR" >"$SC_ROOTS/$c.build.log" 2>&1 ||
        { tail -n 20 "$SC_ROOTS/$c.build.log" >&2; die "mmdebstrap $c failed (log: $SC_ROOTS/$c.build.log)"; }
    printf '127.0.0.1\tlocalhost sc-%s\n::1\tlocalhost ip6-localhost\n' "$c" >"$root.new/etc/hosts"
    local got
    got=$(chroot "$root.new" slurmd -V 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -n 1 || true)
    [[ $got == "$v" ]] || die "Debian $c ships Slurm '$got', not $v"
    echo "$want" >"$root.new/.spank-carbon-root"
    rm -rf "$root"
    mv "$root.new" "$root"
    msg "root for Slurm $v: $root ($(du -sh "$root" | cut -f1))"
}

holder_pid() {
    local c=$1 pid
    [[ -r $RUNDIR/$c.pid ]] || return 1
    pid=$(tr -dc '0-9' <"$RUNDIR/$c.pid")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    # The pid must still be our init (pid 1 of its namespace), not a reused number.
    grep -q 'spank-carbon-root-init' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

# The init of the namespaces: sets up the network and mounts, says "ready", then reaps every orphan
# (daemons double-fork; a zombie would look alive to `kill -0`) until killed.
inside() {
    local c=$1 root=${2:-} p
    mount --make-rprivate /
    ip link set lo up
    # glibc's AI_ADDRCONFIG ignores loopback-only hosts: without a second loopback address no Slurm
    # daemon resolves anything in a fresh network namespace.
    ip addr add 127.0.0.2/8 dev lo
    if [[ -n $root ]]; then
        hostname "sc-$c"
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --rbind /sys "$root/sys"
    else
        # This machine's own file system: only /proc (this pid namespace's) and /run are new.
        mount -t proc proc /proc
    fi
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    # A root gets a /tmp of its own; this machine's is kept (the checkout may live there).
    [[ -z $root ]] || mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    if [[ -n $root ]]; then
        for p in "$HERE" ${SC_ROOT_BIND:-}; do
            [[ -d $p ]] || continue
            mkdir -p "$root$p"
            mount --bind "$p" "$root$p"
        done
    fi
    echo ready
    exec python3 -c '
import os, sys, time
sys.argv[0] = "spank-carbon-root-init"
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.5)
' spank-carbon-root-init
}

cmd_up() {
    need_root
    local v=$1 c root pid i
    c=$(nsname "$v")
    root=$(root_of "$v")
    [[ -z $root || -r $root/.spank-carbon-root ]] || die "no root for Slurm $v: run '$0 build $v' first"
    if pid=$(holder_pid "$c"); then
        msg "namespaces for Slurm $v are up (init $pid)"
        return 0
    fi
    install -d -m 0700 "$RUNDIR"
    rm -f "$RUNDIR/$c.pid" "$RUNDIR/$c.log"
    setsid unshare --net --mount --pid --uts --ipc --fork --propagation private -- \
        bash "$0" __inside "$c" "$root" </dev/null >"$RUNDIR/$c.log" 2>&1 &
    local unshare_pid=$!
    for ((i = 0; i < 100; i++)); do
        if grep -qx ready "$RUNDIR/$c.log" 2>/dev/null; then
            pid=$(pgrep -P "$unshare_pid" | head -n 1 || true)
            # Wait for the init to replace the set-up shell.
            if [[ -n $pid ]] && grep -q spank-carbon-root-init "/proc/$pid/cmdline" 2>/dev/null; then
                echo "$pid" >"$RUNDIR/$c.pid"
                msg "namespaces for Slurm $v up (init $pid; root ${root:-/})"
                return 0
            fi
        fi
        kill -0 "$unshare_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$RUNDIR/$c.log" >&2 || true
    kill "$unshare_pid" 2>/dev/null || true
    die "the namespaces for Slurm $v did not come up"
}

cmd_exec() {
    need_root
    local v=$1 c pid root
    shift
    (($# > 0)) || die "exec: no command"
    c=$(nsname "$v")
    root=$(root_of "$v")
    pid=$(holder_pid "$c") || die "the namespaces for Slurm $v are not up: run '$0 up $v'"
    local envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
    if [[ -z $root ]]; then
        envs[0]=PATH=$PATH
        envs[1]=HOME=${HOME:-/root}
    fi
    local name
    while IFS= read -r name; do
        envs+=("$name=${!name}")
    done < <(compgen -e | grep -E '^(SC_|RUST_|SLURM_TEST)' || true)
    [[ -n ${TERM:-} ]] && envs+=("TERM=$TERM")
    local enter=(nsenter -t "$pid" -n -m -p -u -i --)
    [[ -z $root ]] || enter+=(chroot "$root")
    exec "${enter[@]}" /usr/bin/env -i "${envs[@]}" \
        /bin/bash -c 'cd "$1" && shift && exec "$@"' slurm-root "$PWD" "$@"
}

cmd_down() {
    need_root
    local v=$1 c pid i
    c=$(nsname "$v")
    if ! pid=$(holder_pid "$c"); then
        msg "namespaces for Slurm $v are not up"
        return 0
    fi
    # Stop the daemons cleanly first (MariaDB flushes), then end the pid namespace: the kernel kills
    # whatever is left in it when its init dies.
    "$0" exec "$v" "$HERE/scripts/cluster.sh" stop || true
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$RUNDIR/$c.pid"
    msg "namespaces for Slurm $v down"
}

cmd_status() {
    local v=$1 c pid
    c=$(nsname "$v")
    if pid=$(holder_pid "$c"); then echo "Slurm $v ($c): up, init $pid"; else echo "Slurm $v ($c): down"; fi
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

cmd=${1:-}
shift || true
case $cmd in
versions) echo "22.05 24.11 26.05" ;;
root) root_of "${1:?VERSION}" ;;
build) cmd_build "${1:?VERSION}" ;;
up) cmd_up "${1:?VERSION}" ;;
exec) cmd_exec "${1:?VERSION}" "${@:2}" ;;
down) cmd_down "${1:?VERSION}" ;;
status) cmd_status "${1:?VERSION}" ;;
__inside) inside "$1" "${2:-}" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
