#!/usr/bin/env bash
# Builds the Debian package and the RPM of spank-carbon for one Slurm release.
#   scripts/package.sh [--slurm VERSION] [--out DIR] [--profile release|debug]
#   scripts/package.sh --install-deps       installs the tools it and package-test.sh need (Debian:
#                                           dpkg-dev, rpm, cpio, lintian, mandoc, bc) and exits
# VERSION (major.minor, default: this machine's Slurm, 22.05): the plugin is built against that
# release's headers (this machine's /usr/include/slurm for 22.05; the root of scripts/slurm-root.sh
# for the others), since Slurm loads a plugin only when its plugin_version has slurmd's major.minor.
# Writes into DIR (default: target/packages/VERSION):
#   slurm-spank-carbon_<crate>+slurm<V>_amd64.deb   Depends: slurm-wlm-basic-plugins (>= V), (<< V+0.01)
#   slurm-spank-carbon-<crate>-1.slurm<V>.x86_64.rpm  Requires: slurm >= V, slurm < V+0.01
# Both are made from one staged tree with dpkg-deb and rpmbuild (Debian's rpm package); the man
# pages, example configuration and completions come from the binary itself (`spank-carbon docs`).
# --profile debug packages a debug build (tests on a busy machine; never for a release).
# scripts/package-test.sh checks what this makes.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
export PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "[package] ERROR: $*" >&2; exit 1; }
msg() { echo "[package] $*"; }

DEPS=(dpkg-dev rpm cpio lintian mandoc bc)
install_deps() {
    local p missing=()
    for p in "${DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    msg "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

slurm="" out="" profile=release
while (($#)); do
    case $1 in
    --slurm) slurm=${2:?--slurm VERSION}; shift 2 ;;
    --out) out=${2:?--out DIR}; shift 2 ;;
    --profile) profile=${2:?--profile release|debug}; shift 2 ;;
    --install-deps) install_deps; exit 0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ $profile == release || $profile == debug ]] || die "--profile must be release or debug"
for t in dpkg-deb dpkg-shlibdeps rpmbuild; do
    command -v "$t" >/dev/null || die "$t is missing: run '$0 --install-deps' (apt-get install ${DEPS[*]})"
done

# --- build against the release's headers -------------------------------------------------------
slurm=${slurm:-22.05}
[[ " $(scripts/slurm-root.sh versions) " == *" $slurm "* ]] ||
    die "unknown Slurm version '$slurm' (have: $(scripts/slurm-root.sh versions))"
root=$(scripts/slurm-root.sh root "$slurm")
if [[ -n $root ]]; then
    [[ -r $root/usr/include/slurm/spank.h ]] || die "no headers of Slurm $slurm in $root: run 'scripts/slurm-root.sh build $slurm'"
    export SLURM_INCLUDE_DIR=$root/usr/include
else
    unset SLURM_INCLUDE_DIR
fi
target=${CARGO_TARGET_DIR:-$here/target}
out=${out:-$target/packages/$slurm}
msg "building ($profile) for Slurm $slurm${root:+ against $root/usr/include}"
flag=()
[[ $profile == release ]] && flag=(--release)
cargo build "${flag[@]}" --locked --lib --bin spank-carbon
bin=$target/$profile/spank-carbon
lib=$target/$profile/libspank_carbon.so
built=$("$bin" slurm-version)
[[ $built == "$slurm".* ]] || die "built for Slurm $built, not $slurm"
crate=$("$bin" --version | awk '{print $2}')
[[ $crate =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "crate version '$crate' is not x.y.z"
major=${slurm%%.*} minor=${slurm#*.}
next=$(printf '%s.%02d' "$major" $((10#$minor + 1)))
deb_version="$crate+slurm$slurm"
rpm_release="1.slurm$slurm"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

work=$(mktemp -d "${TMPDIR:-/tmp}/sc-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 022
mkdir -p "$out"

# stage FLAVOR DIR: the installed tree for deb or rpm.
stage() {
    local flavor=$1 d=$2 plugin_dir zsh doc include_note
    if [[ $flavor == deb ]]; then
        plugin_dir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/slurm-wlm
        zsh=/usr/share/zsh/vendor-completions
        include_note="Debian's plugstack.conf includes plugstack.conf.d/*.conf."
    else
        plugin_dir=/usr/lib64/slurm
        zsh=/usr/share/zsh/site-functions
        include_note="plugstack.conf must include this directory once: echo 'include /etc/slurm/plugstack.conf.d/*.conf' >>/etc/slurm/plugstack.conf"
    fi
    doc=/usr/share/doc/slurm-spank-carbon
    local plugin=$plugin_dir/libspank_carbon.so toml=/etc/spank-carbon/spank-carbon.toml
    local dropin=/etc/slurm/plugstack.conf.d/spank-carbon.conf
    install -d "$d$plugin_dir" "$d/usr/bin" "$d/etc/slurm/plugstack.conf.d" "$d/etc/spank-carbon" \
        "$d/etc/logrotate.d" "$d/usr/lib/tmpfiles.d" "$d/usr/lib/systemd/system" \
        "$d/usr/share/man/man8" "$d/usr/share/man/man5" "$d/usr/share/bash-completion/completions" \
        "$d$zsh" "$d/usr/share/fish/vendor_completions.d" "$d$doc"
    # Stripped: the debug info stays in the build tree.
    install -m 0755 "$bin" "$d/usr/bin/spank-carbon"
    install -m 0644 "$lib" "$d$plugin"
    strip --strip-unneeded --remove-section=.comment "$d/usr/bin/spank-carbon" "$d$plugin"
    # Slurm's MailProg takes no arguments: the mail wrapper also answers to this name.
    ln -s spank-carbon "$d/usr/bin/spank-carbon-mail"
    "$bin" docs --out "$work/docs-$flavor" --plugin "$plugin" >/dev/null
    local g=$work/docs-$flavor
    gzip -9n <"$g/man8/spank-carbon.8" >"$d/usr/share/man/man8/spank-carbon.8.gz"
    gzip -9n <"$g/man5/spank-carbon.conf.5" >"$d/usr/share/man/man5/spank-carbon.conf.5.gz"
    install -m 0644 "$g/spank-carbon.toml" "$d$toml"
    install -m 0644 "$g/completions/spank-carbon.bash" "$d/usr/share/bash-completion/completions/spank-carbon"
    install -m 0644 "$g/completions/_spank-carbon" "$d$zsh/_spank-carbon"
    install -m 0644 "$g/completions/spank-carbon.fish" "$d/usr/share/fish/vendor_completions.d/spank-carbon.fish"
    sed -e "s|@PLUGIN@|$plugin|g" -e "s|@TOML@|$toml|g" -e "s|@DROPIN@|$dropin|g" \
        -e "s|@INCLUDE_NOTE@|$include_note|g" packaging/plugstack.conf.in >"$d$dropin"
    chmod 0644 "$d$dropin"
    install -m 0644 packaging/logrotate "$d/etc/logrotate.d/spank-carbon"
    install -m 0644 packaging/tmpfiles.conf "$d/usr/lib/tmpfiles.d/spank-carbon.conf"
    install -m 0644 packaging/systemd/*.service packaging/systemd/*.timer "$d/usr/lib/systemd/system/"
    install -m 0644 packaging/fairshare.toml.example "$d$doc/fairshare.toml.example"
    gzip -9n <README.md >"$d$doc/README.md.gz"
    # Other helpers' contributions: the Grafana dashboard(s), shipped when present.
    local dash
    for dash in contrib/grafana/*.json; do
        [[ -f $dash ]] || continue
        install -d "$d/usr/share/spank-carbon/grafana"
        install -m 0644 "$dash" "$d/usr/share/spank-carbon/grafana/"
    done
    if [[ $flavor == deb ]]; then
        install -m 0644 packaging/copyright "$d$doc/copyright"
        printf '%s (%s) unstable; urgency=medium\n\n  * Built by scripts/package.sh for Slurm %s.\n\n -- %s  %s\n' \
            slurm-spank-carbon "$deb_version" "$built" "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" |
            gzip -9n >"$d$doc/changelog.gz"
    else
        install -d "$d/usr/share/licenses/slurm-spank-carbon"
        install -m 0644 LICENSE "$d/usr/share/licenses/slurm-spank-carbon/LICENSE"
    fi
    find "$d" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

maintainer=${SC_MAINTAINER:-spank-carbon developers <spank-carbon@example.org>}
description="Slurm SPANK plugin: each job's GPU energy and CO2e in its accounting record"

# --- Debian package ----------------------------------------------------------------------------
deb() {
    local d=$work/deb arch
    arch=$(dpkg --print-architecture)
    stage deb "$d"
    local plugin
    plugin=$(cd "$d" && ls usr/lib/*/slurm-wlm/libspank_carbon.so)
    # The libraries the binary and the plugin link (libc, libgcc_s), as dpkg-shlibdeps finds them.
    mkdir -p "$work/shl/debian"
    printf 'Source: slurm-spank-carbon\n\nPackage: slurm-spank-carbon\nArchitecture: any\n' >"$work/shl/debian/control"
    local shlibs
    shlibs=$(cd "$work/shl" && dpkg-shlibdeps -O "$d/usr/bin/spank-carbon" "$d/$plugin" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')
    [[ -n $shlibs ]] || die "dpkg-shlibdeps found no dependencies"
    install -d "$d/DEBIAN"
    cat >"$d/DEBIAN/control" <<EOF
Package: slurm-spank-carbon
Version: $deb_version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$d" | cut -f1)
Depends: $shlibs, slurm-wlm-basic-plugins (>= $slurm), slurm-wlm-basic-plugins (<< $next)
Recommends: slurm-client
Section: admin
Priority: optional
Homepage: https://slurm.schedmd.com/spank.html
Description: $description
 spank-carbon measures the energy of each Slurm job's GPUs with NVML (energy
 counters, sampled power) on every node of the job, converts it to CO2e and
 writes one record into the job's accounting comment, which users read with
 sacct or spank-carbon report. Built for Slurm $built: slurmd loads it only
 when its major.minor release is $slurm.
 .
 The plugstack.conf drop-in is shipped disabled: see
 /etc/slurm/plugstack.conf.d/spank-carbon.conf and spank-carbon(8).
EOF
    (cd "$d" && find etc -type f | sed 's|^|/|' | sort) >"$d/DEBIAN/conffiles"
    cat >"$d/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # The state directory, root only (tmpfiles.d/spank-carbon.conf; without systemd, by hand).
    if command -v systemd-tmpfiles >/dev/null 2>&1; then
        systemd-tmpfiles --create spank-carbon.conf || install -d -m 0700 -o root -g root /var/lib/spank-carbon
    else
        install -d -m 0700 -o root -g root /var/lib/spank-carbon
    fi
fi
# systemd reads the units this package installed or changed (none is enabled or started).
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
EOF
    cat >"$d/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Timers an operator enabled stop with the package; nothing is enabled by the package itself.
if [ "$1" = remove ] && [ -d /run/systemd/system ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
    deb-systemd-invoke stop spank-carbon-fairshare.timer spank-carbon-tres.timer prometheus-node-exporter-spank-carbon.timer >/dev/null 2>&1 || true
fi
exit 0
EOF
    cat >"$d/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
# The state directory (records, pending deliveries) is kept, even on purge.
if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper purge spank-carbon-fairshare.timer spank-carbon-tres.timer prometheus-node-exporter-spank-carbon.timer >/dev/null 2>&1 || true
fi
# systemd forgets the units the package removed.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
EOF
    chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm" "$d/DEBIAN/postrm"
    (cd "$d" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$d/DEBIAN/md5sums"
    chmod 0644 "$d/DEBIAN/"{control,conffiles,md5sums}
    local file=$out/slurm-spank-carbon_${deb_version}_$arch.deb
    dpkg-deb --root-owner-group -Zxz --build "$d" "$file" >/dev/null
    msg "built $file"
}

# --- RPM ---------------------------------------------------------------------------------------
rpm_pkg() {
    local d=$work/rpmroot top=$work/rpmbuild
    stage rpm "$d"
    mkdir -p "$top"/{BUILD,RPMS,SPECS,SRPMS,SOURCES}
    local files
    files=$(cd "$d" && find . \( -type f -o -type l \) -printf '/%P\n' | sort | sed \
        -e 's|^\(/etc/.*\)$|%config(noreplace) \1|' \
        -e 's|^\(/usr/share/man/.*\)$|%doc \1|' \
        -e 's|^\(/usr/share/licenses/.*\)$|%license \1|')
    cat >"$top/SPECS/slurm-spank-carbon.spec" <<EOF
Name: slurm-spank-carbon
Version: $crate
Release: $rpm_release
Summary: $description
License: GPL-2.0-or-later
URL: https://slurm.schedmd.com/spank.html
Requires: slurm >= $slurm
Requires: slurm < $next
%global debug_package %{nil}
%global __strip /bin/true
%global _build_id_links none
# The plugin is loaded by path, not linked: it provides no library to other packages.
%global __provides_exclude_from ^/usr/lib64/slurm/.*\\.so$

%description
spank-carbon measures the energy of each Slurm job's GPUs with NVML on every node of
the job, converts it to CO2e and writes one record into the job's accounting comment.
Built for Slurm $built: slurmd loads it only when its major.minor release is $slurm.
The plugstack.conf drop-in is shipped disabled: see
/etc/slurm/plugstack.conf.d/spank-carbon.conf and spank-carbon(8).

%install
cp -a $d/. %{buildroot}/

%post
systemd-tmpfiles --create spank-carbon.conf >/dev/null 2>&1 || install -d -m 0700 -o root -g root /var/lib/spank-carbon
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi

%preun
if [ "\$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now spank-carbon-fairshare.timer spank-carbon-tres.timer prometheus-node-exporter-spank-carbon.timer >/dev/null 2>&1 || :
fi

%postun
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi

%files
%defattr(-,root,root,-)
%dir /etc/spank-carbon
%dir /usr/share/doc/slurm-spank-carbon
$files
EOF
    rpmbuild -bb --quiet --define "_topdir $top" --define "_rpmdir $top/RPMS" \
        --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --target x86_64-linux "$top/SPECS/slurm-spank-carbon.spec" >"$work/rpmbuild.log" 2>&1 ||
        { cat "$work/rpmbuild.log" >&2; die "rpmbuild failed"; }
    local file
    file=$(ls "$top/RPMS/"*.rpm)
    mv "$file" "$out/"
    msg "built $out/$(basename "$file")"
}

deb
rpm_pkg
