#!/usr/bin/env bash
# mesos: Apache Mesos (retired upstream), by components.mesos.source:
#   build        the package kiln built from source (invoke package mesos); kiln uploads it and
#                sets package_url/package_sha256 to it
#   package_url  a .deb/.rpm the user pins with components.mesos.package_url + package_sha256
#   aventer      AVENTER's aventer-mesos repository, on components.mesos.supported_targets only
# No source for the target is an error before anything is installed, never a silent skip.
# mesos-master and mesos-agent stay disabled; kiln-node writes /etc/mesos* and enables the
# node's role at boot. Mesos 1.11 predates cgroups v2: the kernel boots with the v1 hierarchy.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

package_url=${KILN_MESOS_PACKAGE_URL:-}
supported=${KILN_MESOS_SUPPORTED_TARGETS:-}
source=${KILN_MESOS_SOURCE:-}

# --- decide and check everything before changing the machine
case "$source" in
  build)
    [[ -n "$package_url" ]] || kiln_die "components.mesos.source is build, but kiln passed no package: build it with \`invoke package mesos --target $KILN_TARGET\` (invoke build does it for you)"
    mode=package_url
    ;;
  package_url)
    [[ -n "$package_url" ]] || kiln_die "components.mesos.source is package_url, but components.mesos.package_url is empty"
    mode=package_url
    ;;
  aventer)
    if [[ " $supported " != *" $KILN_TARGET "* ]]; then
      listed=${supported:-none}
      kiln_die "no Mesos package source for target $KILN_TARGET: AVENTER's repository is only configured for components.mesos.supported_targets = [${listed// /, }]. Use components.mesos.source = build (kiln builds Mesos from source), or package_url with a Mesos .deb or .rpm for $KILN_TARGET; or leave \"mesos\" out of components.enabled for this target."
    fi
    mode=repository
    ;;
  *) kiln_die "components.mesos.source '$source' is not one of build, package_url, aventer" ;;
esac

if [[ "$mode" == package_url ]]; then
  kiln_need KILN_MESOS_PACKAGE_SHA256 components.mesos.package_sha256
  want_ext=deb
  if [[ "$KILN_FAMILY" == dnf ]]; then
    want_ext=rpm
  fi
  case "${package_url%%\?*}" in
    *."$want_ext") ;;
    *.deb | *.rpm) kiln_die "components.mesos.package_url is a ${package_url##*.} but $KILN_TARGET installs .$want_ext packages: $package_url" ;;
    *) kiln_die "components.mesos.package_url must name a .$want_ext file: $package_url" ;;
  esac
  case "$package_url" in
    http://* | https://* | file://*) package_file="" ;;
    /*) package_file=$package_url ;;
    *) package_file="$KILN_SRC/$package_url" ;; # relative: inside the uploaded tree
  esac
  if [[ -n "$package_file" && ! -f "$package_file" ]]; then
    kiln_die "components.mesos.package_url: $package_file does not exist in the build machine (a path is read where the image is baked; use an http(s) URL or put the file under $KILN_SRC)"
  fi
else
  if [[ "$KILN_FAMILY" != apt ]]; then
    kiln_die "$KILN_TARGET is listed in components.mesos.supported_targets, but kiln knows only AVENTER's apt repository (components.mesos.apt_repo); set components.mesos.package_url and package_sha256 to an .rpm for $KILN_TARGET"
  fi
  kiln_need KILN_MESOS_PACKAGE components.mesos.package
  kiln_need KILN_MESOS_APT_REPO components.mesos.apt_repo
  # {Distro} and {codename} in apt_repo become this target's (Debian/bookworm, Ubuntu/noble, ...):
  # AVENTER keeps one repository per release at rpm.aventer.biz/<Distro>/<codename>.
  distro_dir=${KILN_DISTRO^}
  apt_repo=${KILN_MESOS_APT_REPO//\{Distro\}/$distro_dir}
  apt_repo=${apt_repo//\{codename\}/$KILN_CODENAME}
  kiln_need KILN_MESOS_KEY_URL components.mesos.key_url
  kiln_fingerprint "${KILN_MESOS_KEY_FINGERPRINT:-}" components.mesos.key_fingerprint
  fingerprint=$KILN_FINGERPRINT
  keyring=$(sed -n 's/.*signed-by=\([^] ]*\).*/\1/p' <<<"$apt_repo")
  if [[ -z "$keyring" ]]; then
    kiln_die "components.mesos.apt_repo must name its key file, e.g. 'deb [signed-by=/etc/apt/keyrings/aventer.asc] http://rpm.aventer.biz/{Distro}/{codename} {codename} main'"
  fi
fi

# --- install
if [[ "$mode" == repository ]]; then
  pkg_install ca-certificates
  # An installed key that still checks out is kept; otherwise fetch it (again: it may have
  # been renewed) and verify fingerprint and expiry before apt trusts it.
  if [[ -s "$keyring" ]] && (gpg_key_check "$keyring" "$fingerprint" components.mesos >/dev/null 2>&1); then
    kiln_log "repository key $keyring verified"
  else
    kiln_tmpdir tmp
    kiln_log "fetching the repository key $KILN_MESOS_KEY_URL"
    _kiln_fetch "$KILN_MESOS_KEY_URL" "$tmp/key.asc" ||
      kiln_die "could not download components.mesos.key_url ($KILN_MESOS_KEY_URL)"
    gpg_key_check "$tmp/key.asc" "$fingerprint" components.mesos
    install -d -m 0755 "$(dirname "$keyring")"
    write_file_if_changed "$keyring" 0644 <"$tmp/key.asc"
  fi
  printf '%s\n' "# kiln: Apache Mesos packages (components.mesos.apt_repo)" "$apt_repo" |
    write_file_if_changed /etc/apt/sources.list.d/kiln-mesos.list 0644
  package=$KILN_MESOS_PACKAGE
  pkg_install "$package"
else
  if [[ -z "$package_file" ]]; then
    name=${package_url%%\?*}
    package_file="/var/cache/kiln/downloads/${name##*/}"
    download "$package_url" "$package_file" "$KILN_MESOS_PACKAGE_SHA256" components.mesos.package_sha256
  else
    verify_checksum "$package_file" "$KILN_MESOS_PACKAGE_SHA256" components.mesos.package_sha256
  fi
  if [[ "$KILN_FAMILY" == apt ]]; then
    package=$(dpkg-deb -f "$package_file" Package)
    file_version=$(dpkg-deb -f "$package_file" Version)
  else
    package=$(rpm -qp --qf '%{NAME}' "$package_file")
    file_version=$(rpm -qp --qf '%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}' "$package_file")
  fi
  if pkg_installed "$package" && [[ "$(pkg_version "$package")" == "$file_version" ]]; then
    kiln_log "$package $file_version is installed"
  else
    pkg_install "$package_file"
  fi
fi

for binary in mesos-master mesos-agent; do
  command -v "$binary" >/dev/null || kiln_die "$package is installed but provides no $binary: is it a Mesos package?"
done
service_disable mesos-master.service mesos-agent.service mesos-slave.service
install -d -m 0755 /etc/mesos /etc/mesos-master /etc/mesos-agent /var/lib/mesos /var/log/mesos

# Mesos 1.11's Linux launcher and cgroups isolators know only the v1 hierarchy (systemd boots
# v2 by default since Debian 12): the kernel must be asked for v1. kiln's own base images ask on
# their extlinux line (never rewritten after the first boot: see kiln/image/base.py); images that
# boot with GRUB get a drop-in.
cgroup_v1=systemd.unified_cgroup_hierarchy=0
if [[ -f /boot/extlinux/extlinux.conf ]]; then
  grep -q "APPEND.*$cgroup_v1" /boot/extlinux/extlinux.conf ||
    kiln_die "/boot/extlinux/extlinux.conf does not ask for $cgroup_v1, which Mesos 1.11 needs: rebuild the base image (invoke base --force)"
elif [[ -d /etc/default/grub.d ]] || [[ -f /etc/default/grub ]]; then
  install -d -m 0755 /etc/default/grub.d
  printf '%s\n' "# kiln (mesos): Mesos 1.11 needs the cgroup v1 hierarchy" \
    "GRUB_CMDLINE_LINUX=\"\$GRUB_CMDLINE_LINUX $cgroup_v1\"" |
    write_file_if_changed /etc/default/grub.d/50-kiln-mesos.cfg 0644
  if $KILN_CHANGED; then
    if command -v update-grub >/dev/null; then update-grub; else grub2-mkconfig -o /boot/grub2/grub.cfg; fi
  fi
fi

version=$(pkg_version "$package")
if [[ "$mode" == repository ]]; then
  extra=$(kiln_json source=aventer package="$package" apt_repo="$apt_repo" key_fingerprint="$fingerprint")
else
  extra=$(kiln_json source="$source" package="$package" package_url="$package_url" sha256="$KILN_MESOS_PACKAGE_SHA256" \
    built_by="${KILN_MESOS_BUILT_BY:-}")
fi
record_component mesos "$version" "$extra"
