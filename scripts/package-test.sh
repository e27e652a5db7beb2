#!/usr/bin/env bash
# Builds the packages with scripts/package.sh and checks them without a cluster:
#   scripts/package-test.sh [--slurm VERSION] [--out DIR] [--profile release|debug]
# The .deb: dpkg-deb -I/-c (name, version, Depends pinned to the release, the file list and modes,
# conffiles), lintian with no error, the drop-in shipped disabled and enabled by its one documented
# step, the man pages through mandoc's linter, the binary's Slurm release. The .rpm: rpm -qlp (the
# file list), --requires (pinned to the release), --scripts (state directory, timers), -qcp
# (configuration files), its version and release. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
slurm=22.05 out="" profile=release
while (($#)); do
    case $1 in
    --slurm) slurm=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --profile) profile=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--slurm VERSION] [--out DIR] [--profile release|debug]" >&2; exit 2 ;;
    esac
done
out=${out:-${CARGO_TARGET_DIR:-$(pwd)/target}/packages/$slurm}
rm -rf "$out"
scripts/package.sh --install-deps
start=$(date +%s.%N)
scripts/package.sh --slurm "$slurm" --out "$out" --profile "$profile"
echo "[package-test] scripts/package.sh took $(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f') s"

fails=0
ok() { echo "ok      $*"; }
fail() { echo "FAILED  $*"; fails=$((fails + 1)); }
check() { # check DESCRIPTION COMMAND...: passes when the command succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
has_line() { grep -qxF -- "$2" <<<"$1"; }

crate=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${slurm%%.*} minor=${slurm#*.}
next=$(printf '%s.%02d' "$major" $((10#$minor + 1)))
deb=$out/slurm-spank-carbon_${crate}+slurm${slurm}_amd64.deb
rpm=$out/slurm-spank-carbon-${crate}-1.slurm${slurm}.x86_64.rpm
check "deb built: $(basename "$deb")" test -s "$deb"
check "rpm built: $(basename "$rpm")" test -s "$rpm"

# --- .deb ------------------------------------------------------------------------------------
info=$(dpkg-deb -I "$deb")
field() { dpkg-deb -f "$deb" "$1"; }
check "deb Package" test "$(field Package)" = slurm-spank-carbon
check "deb Version $crate+slurm$slurm" test "$(field Version)" = "$crate+slurm$slurm"
depends=$(field Depends)
check "deb Depends pins slurm-wlm-basic-plugins (>= $slurm)" grep -qF "slurm-wlm-basic-plugins (>= $slurm)" <<<"$depends"
check "deb Depends pins slurm-wlm-basic-plugins (<< $next)" grep -qF "slurm-wlm-basic-plugins (<< $next)" <<<"$depends"
check "deb Depends has libc6" grep -qF "libc6 (>=" <<<"$depends"
check "deb has postinst, prerm, postrm" grep -q 'postinst' <<<"$info"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
plugin=/usr/lib/$multiarch/slurm-wlm/libspank_carbon.so
deb_files=(
    "-rw-r--r-- $plugin"
    "-rwxr-xr-x /usr/bin/spank-carbon"
    "lrwxrwxrwx /usr/bin/spank-carbon-mail"
    "-rw-r--r-- /etc/slurm/plugstack.conf.d/spank-carbon.conf"
    "-rw-r--r-- /etc/spank-carbon/spank-carbon.toml"
    "-rw-r--r-- /etc/logrotate.d/spank-carbon"
    "-rw-r--r-- /usr/lib/tmpfiles.d/spank-carbon.conf"
    "-rw-r--r-- /usr/lib/systemd/system/spank-carbon-fairshare.service"
    "-rw-r--r-- /usr/lib/systemd/system/spank-carbon-fairshare.timer"
    "-rw-r--r-- /usr/lib/systemd/system/spank-carbon-tres.service"
    "-rw-r--r-- /usr/lib/systemd/system/spank-carbon-tres.timer"
    "-rw-r--r-- /usr/lib/systemd/system/prometheus-node-exporter-spank-carbon.service"
    "-rw-r--r-- /usr/lib/systemd/system/prometheus-node-exporter-spank-carbon.timer"
    "-rw-r--r-- /usr/share/man/man8/spank-carbon.8.gz"
    "-rw-r--r-- /usr/share/man/man5/spank-carbon.conf.5.gz"
    "-rw-r--r-- /usr/share/bash-completion/completions/spank-carbon"
    "-rw-r--r-- /usr/share/zsh/vendor-completions/_spank-carbon"
    "-rw-r--r-- /usr/share/fish/vendor_completions.d/spank-carbon.fish"
    "-rw-r--r-- /usr/share/doc/slurm-spank-carbon/copyright"
    "-rw-r--r-- /usr/share/doc/slurm-spank-carbon/changelog.gz"
    "-rw-r--r-- /usr/share/doc/slurm-spank-carbon/fairshare.toml.example"
)
for f in contrib/grafana/*.json; do
    [[ -f $f ]] && deb_files+=("-rw-r--r-- /usr/share/spank-carbon/grafana/$(basename "$f")")
done
# "MODE root/root ... ./PATH" -> "MODE /PATH"
listing=$(dpkg-deb -c "$deb" | awk '{print $1, $2, substr($6, 2)}')
for want in "${deb_files[@]}"; do
    check "deb contains $want (root/root)" has_line "$listing" "${want% *} root/root ${want#* }"
done
check "deb: every file root-owned" test -z "$(awk '$2 != "root/root"' <<<"$listing")"
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
for c in /etc/slurm/plugstack.conf.d/spank-carbon.conf /etc/spank-carbon/spank-carbon.toml /etc/logrotate.d/spank-carbon; do
    check "deb conffile $c" has_line "$conffiles" "$c"
done

x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x/root"
dpkg-deb -e "$deb" "$x/DEBIAN"
check "deb binary built for Slurm $slurm" grep -q "^$slurm\." <<<"$("$x/root/usr/bin/spank-carbon" slurm-version)"
check "deb tmpfiles: state dir root-only 0700" grep -qE '^d /var/lib/spank-carbon 0700 root root' "$x/root/usr/lib/tmpfiles.d/spank-carbon.conf"
check "deb postinst creates the state dir" grep -q 'systemd-tmpfiles --create spank-carbon.conf' "$x/DEBIAN/postinst"
check "deb postinst reloads systemd's units" grep -q 'systemctl --system daemon-reload' "$x/DEBIAN/postinst"
check "deb postrm reloads systemd's units" grep -q 'systemctl --system daemon-reload' "$x/DEBIAN/postrm"
dropin=$x/root/etc/slurm/plugstack.conf.d/spank-carbon.conf
check "drop-in shipped disabled (no active line)" test -z "$(grep -vE '^[[:space:]]*(#|$)' "$dropin")"
# The one step the drop-in documents, applied to a copy (without the restart).
step=$(sed -n 's/^#   \(sed -i .*\) && systemctl restart slurmd$/\1/p' "$dropin")
check "drop-in documents its one step" test -n "$step"
cp "$dropin" "$x/enabled.conf"
eval "${step/\/etc\/slurm\/plugstack.conf.d\/spank-carbon.conf/\"\$x/enabled.conf\"}"
active=$(grep -vE '^[[:space:]]*(#|$)' "$x/enabled.conf" || true)
check "the step enables exactly one line" test "$(wc -l <<<"$active")" -eq 1
check "enabled line: optional $plugin" grep -q "^optional $plugin " <<<"$active"
check "enabled line passes bin=/usr/bin/spank-carbon" grep -qw "bin=/usr/bin/spank-carbon" <<<"$active"
check "enabled line names the packaged TOML" grep -qw "config=/etc/spank-carbon/spank-carbon.toml" <<<"$active"
# The enabled line's arguments through the plugin's own parser (the packaged TOML included).
read -r -a args <<<"${active#optional "$plugin" }"
args=("${args[@]/#config=\/etc/config=$x/root/etc}")
check "the enabled arguments parse (spank-carbon pending)" \
    "$x/root/usr/bin/spank-carbon" pending --node pkgtest -- "${args[@]}" >/dev/null
for page in man8/spank-carbon.8.gz man5/spank-carbon.conf.5.gz; do
    # Named as installed (mandoc checks the section in the file name against .TH).
    unpacked=$x/$(basename "$page" .gz)
    zcat "$x/root/usr/share/man/$page" >"$unpacked"
    lint=$(mandoc -T lint -W warning "$unpacked" 2>&1 || true)
    check "mandoc -T lint -W warning $page: nothing" test -z "$lint"
    [[ -z $lint ]] || echo "$lint"
    check "$page names the packaged plugin path" grep -qF "${plugin//-/\\-}" "$unpacked"
done
lint=$(lintian --fail-on error "$deb" 2>&1 | grep -v 'running with root privileges' || true)
check "lintian: no error" test -z "$(grep '^E:' <<<"$lint")"
[[ -z $lint ]] || echo "$lint"

# --- .rpm ------------------------------------------------------------------------------------
check "rpm version $crate-1.slurm$slurm" test "$(rpm -qp --qf '%{NAME} %{VERSION}-%{RELEASE}' "$rpm" 2>/dev/null)" = "slurm-spank-carbon $crate-1.slurm$slurm"
rfiles=$(rpm -qlp "$rpm" 2>/dev/null)
for f in /usr/lib64/slurm/libspank_carbon.so /usr/bin/spank-carbon /usr/bin/spank-carbon-mail /etc/slurm/plugstack.conf.d/spank-carbon.conf \
    /etc/spank-carbon/spank-carbon.toml /etc/logrotate.d/spank-carbon /usr/lib/tmpfiles.d/spank-carbon.conf \
    /usr/lib/systemd/system/spank-carbon-fairshare.service /usr/lib/systemd/system/spank-carbon-fairshare.timer \
    /usr/lib/systemd/system/spank-carbon-tres.service /usr/lib/systemd/system/spank-carbon-tres.timer \
    /usr/lib/systemd/system/prometheus-node-exporter-spank-carbon.service \
    /usr/lib/systemd/system/prometheus-node-exporter-spank-carbon.timer \
    /usr/share/man/man8/spank-carbon.8.gz /usr/share/man/man5/spank-carbon.conf.5.gz \
    /usr/share/bash-completion/completions/spank-carbon /usr/share/zsh/site-functions/_spank-carbon \
    /usr/share/fish/vendor_completions.d/spank-carbon.fish /usr/share/licenses/slurm-spank-carbon/LICENSE; do
    check "rpm contains $f" has_line "$rfiles" "$f"
done
requires=$(rpm -qp --requires "$rpm" 2>/dev/null)
check "rpm Requires: slurm >= $slurm" has_line "$requires" "slurm >= $slurm"
check "rpm Requires: slurm < $next" has_line "$requires" "slurm < $next"
check "rpm provides no library soname" test -z "$(rpm -qp --provides "$rpm" 2>/dev/null | grep 'libspank_carbon')"
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
check "rpm %post creates the state dir" grep -q 'systemd-tmpfiles --create spank-carbon.conf' <<<"$scripts"
check "rpm %post reloads systemd's units" grep -q 'systemctl daemon-reload' <<<"${scripts%%preuninstall*}"
# shellcheck disable=SC2016 # the scriptlet's own "$1"
check "rpm %preun stops the timers on erase only" grep -q '"$1" -eq 0' <<<"$scripts"
check "rpm %post enables nothing" test -z "$(grep -E 'systemctl (enable|start)|--now' <<<"${scripts%%preuninstall*}")"
configs=$(rpm -qcp "$rpm" 2>/dev/null)
for c in /etc/slurm/plugstack.conf.d/spank-carbon.conf /etc/spank-carbon/spank-carbon.toml /etc/logrotate.d/spank-carbon; do
    check "rpm %config $c" has_line "$configs" "$c"
done
mkdir "$x/rpm"
(cd "$x/rpm" && rpm2cpio "$rpm" | cpio -idm --quiet)
check "rpm drop-in names /usr/lib64/slurm/libspank_carbon.so" grep -q '^#optional /usr/lib64/slurm/libspank_carbon.so bin=/usr/bin/spank-carbon ' "$x/rpm/etc/slurm/plugstack.conf.d/spank-carbon.conf"

echo "[package-test] Slurm $slurm: $fails failure(s)"
((fails == 0))
