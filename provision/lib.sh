# shellcheck shell=bash
# kiln bake-time library, sourced (never executed) by every components/<name>/bake.sh and by the
# image-wide steps in provision/ (manifest, cleanup).
#
# Contract (docs/CONTRIBUTING.md): Packer uploads components/, provision/, kiln_node/ and
# kiln_bridge/ to /tmp/kiln and a rendered env file to /tmp/kiln/kiln.env, then runs each
# component's bake.sh as root.
# Every helper here is idempotent: running a component twice changes nothing the second time.
# Services are installed DISABLED; kiln-node enables the ones a node's role needs at boot.

if [[ -n "${_KILN_LIB_LOADED:-}" ]]; then
  return 0
fi
_KILN_LIB_LOADED=1

umask 022
shopt -s lastpipe
# sudo's secure_path usually covers this; a bare `env -i` (tests, chroots) does not.
PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export PATH LC_ALL=C

KILN_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# components/<name>/bake.sh is component <name>; provision/<step>.sh is step <step>.
if [[ -z "${KILN_COMPONENT:-}" ]]; then
  if [[ "$(basename "$0")" == bake.sh ]]; then
    KILN_COMPONENT=$(basename "$(cd "$(dirname "$0")" && pwd)")
  else
    KILN_COMPONENT=$(basename "$0" .sh)
  fi
fi
KILN_CHANGED=false # set by the *_if_changed helpers: did the last call change anything?

# ---------------------------------------------------------------------------------------------
# Logging and failure

kiln_log() {
  printf 'kiln[%s]: %s\n' "$KILN_COMPONENT" "$*"
}

kiln_warn() {
  printf 'kiln[%s]: WARNING: %s\n' "$KILN_COMPONENT" "$*" >&2
}

kiln_die() {
  printf 'kiln[%s]: ERROR: %s\n' "$KILN_COMPONENT" "$*" >&2
  exit 1
}

_kiln_on_error() {
  local rc=$1 where=$2 cmd=$3
  printf 'kiln[%s]: ERROR: command failed (exit %s) at %s: %s\n' \
    "$KILN_COMPONENT" "$rc" "$where" "$cmd" >&2
  exit "$rc"
}
trap '_kiln_on_error "$?" "${BASH_SOURCE[0]##*/}:${LINENO}" "$BASH_COMMAND"' ERR

# Commands run at exit (temp dirs, the temporary policy-rc.d). Components must not set their
# own EXIT trap; they call kiln_on_exit instead.
_KILN_EXIT_HOOKS=()
kiln_on_exit() {
  _KILN_EXIT_HOOKS+=("$1")
}
_kiln_run_exit_hooks() {
  local hook
  for hook in "${_KILN_EXIT_HOOKS[@]}"; do
    eval "$hook" || true
  done
}
trap _kiln_run_exit_hooks EXIT

# kiln_tmpdir VAR: VAR names a new temp dir, removed when the script exits.
kiln_tmpdir() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/kiln-${KILN_COMPONENT}.XXXXXX")
  kiln_on_exit "rm -rf '$dir'"
  printf -v "$1" '%s' "$dir"
}

# kiln_need VAR CONFIG_KEY: die with the config key to fix when VAR is empty.
kiln_need() {
  local var=$1 key=$2
  if [[ -z "${!var:-}" ]]; then
    kiln_die "$key is empty ($var in $KILN_ENV): set it in config.json, or leave '$KILN_COMPONENT' out of components.enabled"
  fi
}

# ---------------------------------------------------------------------------------------------
# Environment

if [[ $EUID -ne 0 ]]; then
  kiln_die "must run as root (Packer runs: sudo KILN_ENV=/tmp/kiln/kiln.env bash components/$KILN_COMPONENT/bake.sh)"
fi

KILN_ENV="${KILN_ENV:-/tmp/kiln/kiln.env}"
if [[ ! -r "$KILN_ENV" ]]; then
  kiln_die "environment file $KILN_ENV not found; set KILN_ENV to a rendered kiln.env (build/packer/<target>-<builder>/kiln.env)"
fi
# shellcheck source=/dev/null
. "$KILN_ENV"
KILN_SRC="${KILN_SRC:-$(dirname "$KILN_LIB_DIR")}"

for _kiln_var in KILN_TARGET KILN_DISTRO KILN_FAMILY; do
  if [[ -z "${!_kiln_var:-}" ]]; then
    kiln_die "$_kiln_var is missing from $KILN_ENV (render it again with kiln)"
  fi
done
unset _kiln_var

case "$KILN_FAMILY" in
  apt) command -v apt-get >/dev/null || kiln_die "KILN_FAMILY=apt but apt-get is missing: is $KILN_TARGET the right target for this machine?" ;;
  dnf) command -v dnf >/dev/null || kiln_die "KILN_FAMILY=dnf but dnf is missing: is $KILN_TARGET the right target for this machine?" ;;
  *) kiln_die "KILN_FAMILY='$KILN_FAMILY' is not supported (apt or dnf)" ;;
esac

# True in a chroot (or without /proc): nothing may touch the running kernel or init then.
kiln_in_chroot() {
  [[ -e /proc/1/root ]] || return 0
  [[ "$(stat -Lc %d:%i /)" != "$(stat -Lc %d:%i /proc/1/root/ 2>/dev/null)" ]]
}

# True when systemd runs this machine, so live actions (reload, stop, sysctl) make sense.
kiln_systemd_live() {
  [[ -d /run/systemd/system ]] && ! kiln_in_chroot
}

# ---------------------------------------------------------------------------------------------
# Files

# write_file_if_changed PATH MODE < content: atomic replace, only when content or mode differ.
write_file_if_changed() {
  local path=$1 mode=${2:-0644} dir tmp want have
  dir=$(dirname "$path")
  [[ -d "$dir" ]] || mkdir -p "$dir"
  tmp=$(mktemp "$dir/.kiln-new.XXXXXX")
  if ! cat >"$tmp"; then
    rm -f "$tmp"
    kiln_die "could not write $path"
  fi
  want=$(printf '%o' "$((8#$mode))")
  KILN_CHANGED=false
  if [[ -f "$path" && ! -L "$path" ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    have=$(stat -c %a "$path")
    if [[ "$have" != "$want" ]]; then
      chmod "$mode" "$path"
      KILN_CHANGED=true
      kiln_log "mode $mode: $path"
    fi
    return 0
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
  KILN_CHANGED=true
  kiln_log "wrote $path"
}

# kiln_symlink TARGET LINK: point LINK at TARGET unless it already does.
kiln_symlink() {
  local target=$1 link=$2
  KILN_CHANGED=false
  if [[ -L "$link" && "$(readlink "$link")" == "$target" ]]; then
    return 0
  fi
  ln -sfn "$target" "$link"
  KILN_CHANGED=true
  kiln_log "linked $link -> $target"
}

# install_tree SRC DEST: DEST becomes a copy of SRC (root-owned, no bytecode caches); swapped in
# whole, and only when something differs.
install_tree() {
  local src=$1 dest=$2 new old
  [[ -d "$src" ]] || kiln_die "install_tree: $src is not a directory"
  KILN_CHANGED=false
  if [[ -d "$dest" ]] && diff -r -q -x __pycache__ -x '*.pyc' "$src" "$dest" >/dev/null 2>&1; then
    return 0
  fi
  new="$dest.kiln-new"
  old="$dest.kiln-old"
  rm -rf "$new" "$old"
  mkdir -p "$new"
  tar -C "$src" --exclude=__pycache__ --exclude='*.pyc' -cf - . | tar -C "$new" --no-same-owner -xf -
  chown -R root:root "$new"
  find "$new" -type d -exec chmod 0755 {} +
  find "$new" -type f -exec chmod 0644 {} +
  if [[ -e "$dest" ]]; then
    mv "$dest" "$old"
  fi
  mv "$new" "$dest"
  rm -rf "$old"
  KILN_CHANGED=true
  kiln_log "installed $src -> $dest"
}

# kiln_system_user NAME HOME: a locked system account with its own group and a home dir.
kiln_system_user() {
  local name=$1 home=$2 nologin
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  if ! getent group "$name" >/dev/null; then
    groupadd --system "$name"
  fi
  if ! getent passwd "$name" >/dev/null; then
    useradd --system --gid "$name" --home-dir "$home" --no-create-home --shell "$nologin" \
      --comment "kiln $name" "$name"
    kiln_log "created system user $name"
  fi
  install -d -o "$name" -g "$name" -m 0750 "$home"
}

# ---------------------------------------------------------------------------------------------
# JSON and the component records

_kiln_python() {
  if ! command -v python3 >/dev/null; then
    pkg_install python3 >&2 # callers capture stdout
  fi
  python3 "$@"
}

# kiln_json key=value key:=RAW_JSON ... -> one JSON object (values are strings unless :=).
kiln_json() {
  _kiln_python - "$@" <<'PY'
import json
import sys

out = {}
for arg in sys.argv[1:]:
    key, value = arg.split("=", 1)
    if key.endswith(":"):
        out[key[:-1]] = json.loads(value)
    else:
        out[key] = value
print(json.dumps(out, sort_keys=True))
PY
}

# record_component NAME VERSION [EXTRA_JSON]: /etc/kiln/components.d/NAME.json, which
# manifest.sh assembles into /etc/kiln/manifest.json. VERSION is what the image holds: the package
# manager's exact version (pkg_version), or read from what was installed; never a config value.
record_component() {
  local name=$1 version=${2:-} extra=${3:-"{}"} json
  [[ -n "$version" ]] || kiln_die "record_component $name: empty version (was the package installed?)"
  rm -f "/etc/kiln/components.d/$name.off"
  json=$(_kiln_python - "$name" "$version" "$extra" <<'PY'
import json
import sys

name, version, extra = sys.argv[1:4]
try:
    fields = json.loads(extra)
except ValueError as exc:
    sys.exit("record_component %s: extra fields are not JSON: %s" % (name, exc))
if not isinstance(fields, dict):
    sys.exit("record_component %s: extra fields must be a JSON object" % name)
fields.update(name=name, version=version)
print(json.dumps(fields, sort_keys=True, indent=2))
PY
)
  printf '%s\n' "$json" | write_file_if_changed "/etc/kiln/components.d/$name.json" 0644
  kiln_log "recorded $name $version"
}

# record_component_off NAME REASON: NAME is enabled for this image but deliberately not baked (its
# settings turn it off); REASON (one line) says why. manifest.sh puts it in the manifest's
# "not_baked", and the suites skip NAME with that reason. An enabled component that leaves neither
# record fails the suites: silence is never taken for "off".
record_component_off() {
  local name=$1 reason=${2:-}
  [[ -n "$reason" && "$reason" != *$'\n'* ]] || kiln_die "record_component_off $name: give the reason on one line"
  rm -f "/etc/kiln/components.d/$name.json"
  printf '%s\n' "$reason" | write_file_if_changed "/etc/kiln/components.d/$name.off" 0644
  kiln_log "not baked: $name ($reason)"
}

# ---------------------------------------------------------------------------------------------
# Packages (apt | dnf)

_KILN_APT_STAMP=/var/lib/apt/kiln-update.stamp
_KILN_POLICY_RC=/usr/sbin/policy-rc.d
# kiln's package cache, when the build has one (KILN_APT_PROXY): given to each apt command,
# never written into the image's apt configuration. It serves the hosts of the distribution's
# sources (KILN_APT_PROXY_HOSTS) only; other repositories (AVENTER's, say) are reached directly.
_KILN_APT_PROXY_OPTS=()
if [[ -n "${KILN_APT_PROXY:-}" ]]; then
  if [[ -n "${KILN_APT_PROXY_HOSTS:-}" ]]; then
    for _kiln_host in $KILN_APT_PROXY_HOSTS; do
      _KILN_APT_PROXY_OPTS+=(-o "Acquire::http::Proxy::$_kiln_host=$KILN_APT_PROXY")
    done
  else
    _KILN_APT_PROXY_OPTS=(-o "Acquire::http::Proxy=$KILN_APT_PROXY")
  fi
fi
_KILN_APT_OPTS=(-y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${_KILN_APT_PROXY_OPTS[@]}")

# Lists are stale when never fetched by kiln, older than KILN_APT_MAX_AGE seconds, gone
# (cleanup removes them), or when a source or keyring changed since the last update.
_kiln_apt_lists_stale() {
  [[ -f "$_KILN_APT_STAMP" ]] || return 0
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || return 0
  local age=$(($(date +%s) - $(stat -c %Y "$_KILN_APT_STAMP")))
  ((age < ${KILN_APT_MAX_AGE:-21600})) || return 0
  [[ -z "$(find /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/keyrings \
    -newer "$_KILN_APT_STAMP" 2>/dev/null | head -n 1)" ]] || return 0
  return 1
}

apt_update() {
  kiln_log "updating package lists (apt-get update)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 "${_KILN_APT_PROXY_OPTS[@]}"; then
    kiln_die "apt-get update failed: a package source in /etc/apt/sources.list* is unreachable or not validly signed (see the lines above)"
  fi
  touch "$_KILN_APT_STAMP"
}

_kiln_apt_update_if_stale() {
  if _kiln_apt_lists_stale; then
    apt_update
  fi
}

# Package scripts must not start services while the image is baked: a temporary policy-rc.d
# (only when none exists: a chroot or container may bring its own).
_kiln_policy_rc_on() {
  [[ -e "$_KILN_POLICY_RC" ]] && return 0
  printf '#!/bin/sh\n# kiln: temporary, removed when the install ends\nexit 101\n' >"$_KILN_POLICY_RC"
  chmod 0755 "$_KILN_POLICY_RC"
  kiln_on_exit _kiln_policy_rc_off
}
_kiln_policy_rc_off() {
  if [[ -f "$_KILN_POLICY_RC" ]] && grep -q '^# kiln: temporary' "$_KILN_POLICY_RC"; then
    rm -f "$_KILN_POLICY_RC"
  fi
}

_kiln_wait_for_cloud_init() {
  if [[ -z "${_KILN_CLOUD_INIT_DONE:-}" ]] && command -v cloud-init >/dev/null && kiln_systemd_live; then
    # First boot of a cloud image: cloud-init may still be running apt. Bounded: a cloud-init
    # that never settles must not hang the bake (apt's own lock waits take over from here).
    local rc=0
    timeout 900 cloud-init status --wait >/dev/null 2>&1 || rc=$?
    if [[ "$rc" == 124 ]]; then
      kiln_warn "cloud-init was still running after 15 minutes; going on without it"
    fi
  fi
  _KILN_CLOUD_INIT_DONE=1
}

# pkg_installed PKG: is it installed (fully configured)?
pkg_installed() {
  case "$KILN_FAMILY" in
    apt) [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == "ii"* ]] ;;
    dnf) rpm -q --quiet "$1" || rpm -q --quiet --whatprovides "$1" ;;
  esac
}

# pkg_available PKG: installed, or installable from the configured repositories.
pkg_available() {
  pkg_installed "$1" && return 0
  case "$KILN_FAMILY" in
    apt)
      _kiln_apt_update_if_stale
      apt-cache policy "$1" 2>/dev/null | grep -q '^ *Candidate: [^(]'
      ;;
    dnf) dnf -q info "$1" >/dev/null 2>&1 ;;
  esac
}

# component_packages: the packages components/<name>/component.json lists for this package family
# (kiln.env's KILN_<NAME>_PACKAGES), one per line; dies when the component lists none.
component_packages() {
  local var="KILN_${KILN_COMPONENT^^}_PACKAGES"
  var=${var//-/_}
  local -a list
  read -ra list <<<"${!var:-}"
  if ((${#list[@]} == 0)); then
    kiln_die "$var is empty: components/$KILN_COMPONENT/component.json lists no $KILN_FAMILY packages"
  fi
  printf '%s\n' "${list[@]}"
}

# pkg_install_listed: install component_packages.
pkg_install_listed() {
  local -a list
  mapfile -t list < <(component_packages)
  ((${#list[@]})) || exit 1
  pkg_install "${list[@]}"
}

# pkg_install PKG...: install what is missing; nothing at all when everything is there.
pkg_install() {
  local pkg missing=()
  for pkg in "$@"; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  _kiln_wait_for_cloud_init
  kiln_log "installing: ${missing[*]}"
  case "$KILN_FAMILY" in
    apt)
      _kiln_policy_rc_on
      _kiln_apt_update_if_stale
      DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l NEEDRESTART_SUSPEND=1 \
        apt-get install "${_KILN_APT_OPTS[@]}" --no-install-recommends "${missing[@]}"
      ;;
    dnf)
      dnf install -y -q --setopt=install_weak_deps=False "${missing[@]}"
      ;;
  esac
  _kiln_policy_rc_off
  for pkg in "${missing[@]}"; do
    if [[ "$pkg" != */* ]] && ! pkg_installed "$pkg"; then
      kiln_die "$pkg is still not installed after installing it"
    fi
  done
}

# pkg_version PKG: the exact installed version (dpkg: [epoch:]upstream-revision; rpm:
# [epoch:]version-release).
pkg_version() {
  local v=""
  case "$KILN_FAMILY" in
    apt)
      if pkg_installed "$1"; then
        v=$(dpkg-query -W -f='${Version}' "$1")
      fi
      ;;
    dnf)
      v=$(rpm -q --qf '%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\n' "$1" 2>/dev/null | head -n 1) || v=""
      [[ "$v" == *"not installed"* ]] && v=""
      ;;
  esac
  [[ -n "$v" ]] || kiln_die "pkg_version: $1 is not installed"
  printf '%s\n' "$v"
}

# ensure_java: the JRE from components.java (zookeeper and marathon need one even when the
# java component is not enabled).
ensure_java() {
  if command -v java >/dev/null; then
    return 0
  fi
  case "$KILN_FAMILY" in
    apt) kiln_need KILN_JAVA_APT_PACKAGE components.java.apt_package && pkg_install "$KILN_JAVA_APT_PACKAGE" ;;
    dnf) kiln_need KILN_JAVA_DNF_PACKAGE components.java.dnf_package && pkg_install "$KILN_JAVA_DNF_PACKAGE" ;;
  esac
  command -v java >/dev/null || kiln_die "no java on PATH after installing the JRE from components.java"
}

# ---------------------------------------------------------------------------------------------
# Services (systemd)

# install_unit NAME < unit: /etc/systemd/system/NAME.service, never enabled here.
install_unit() {
  local name=${1%.service}
  write_file_if_changed "/etc/systemd/system/$name.service" 0644
  if $KILN_CHANGED && kiln_systemd_live; then
    systemctl daemon-reload
  fi
}

_kiln_unit_name() {
  if [[ "$1" == *.* ]]; then printf '%s\n' "$1"; else printf '%s.service\n' "$1"; fi
}

# service_disable UNIT...: disabled (SysV links included) and, on a live system, stopped.
# Units that do not exist are fine: packages differ between distributions.
service_disable() {
  local unit name state out
  for unit in "$@"; do
    unit=$(_kiln_unit_name "$unit")
    name=${unit%.service}
    state=$(systemctl is-enabled "$unit" 2>/dev/null) || true
    if [[ "$state" == enabled* || "$state" == linked* ]] ||
      compgen -G "/etc/rc[2345].d/S[0-9][0-9]$name" >/dev/null; then
      if ! out=$(systemctl disable "$unit" 2>&1); then
        kiln_die "could not disable $unit: $out"
      fi
      kiln_log "disabled $unit"
    fi
    if kiln_systemd_live && systemctl is-active --quiet "$unit"; then
      systemctl stop "$unit"
      kiln_log "stopped $unit"
    fi
  done
}

# service_enable UNIT...: only for units that are part of the image itself (time sync, host
# keys, networkd), never for cluster services.
service_enable() {
  local unit state
  for unit in "$@"; do
    unit=$(_kiln_unit_name "$unit")
    state=$(systemctl is-enabled "$unit" 2>/dev/null) || true
    if [[ "$state" != enabled ]]; then
      systemctl enable --quiet "$unit"
      kiln_log "enabled $unit"
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# Downloads and keys

# _kiln_checksum_algo SUM -> sha256 | sha512 (by length; an "sha256:" style prefix is allowed).
_kiln_checksum_algo() {
  local sum=${1#*:}
  if [[ "$sum" =~ ^[0-9a-fA-F]{64}$ ]]; then
    echo sha256
  elif [[ "$sum" =~ ^[0-9a-fA-F]{128}$ ]]; then
    echo sha512
  else
    return 1
  fi
}

# verify_checksum FILE SUM [CONFIG_KEY]: die unless FILE has that sha256/sha512.
verify_checksum() {
  local file=$1 sum=${2:-} what=${3:-its checksum} algo actual
  [[ -n "$sum" ]] || kiln_die "no checksum for $file: pin $what in config.json"
  algo=$(_kiln_checksum_algo "$sum") || kiln_die "'$sum' ($what) is not a sha256 (64 hex) or sha512 (128 hex) checksum"
  sum=${sum#*:}
  actual=$("${algo}sum" "$file" | cut -d' ' -f1)
  if [[ "${actual,,}" != "${sum,,}" ]]; then
    kiln_die "checksum mismatch for $file: expected $algo $sum ($what), got $actual"
  fi
}

_kiln_checksum_matches() {
  local file=$1 sum=$2 algo
  algo=$(_kiln_checksum_algo "$sum") || return 1
  sum=${sum#*:}
  [[ "$("${algo}sum" "$file" | cut -d' ' -f1)" == "${sum,,}" ]]
}

# _kiln_fetch URL OUT: one download with retries; curl, or python3's urllib without curl.
# KILN_FETCH_TOOL=curl|python3 picks one explicitly.
_kiln_fetch() {
  local url=$1 out=$2 tries=${KILN_DOWNLOAD_RETRIES:-4} tool=${KILN_FETCH_TOOL:-}
  if [[ -z "$tool" ]]; then
    if command -v curl >/dev/null; then tool=curl; else tool=python3; fi
  fi
  case "$tool" in
    curl)
      curl --fail --silent --show-error --location --proto '=http,https,file' \
        --proto-redir '=http,https' --connect-timeout 30 --max-time 3600 \
        --retry "$tries" --retry-delay 3 --retry-connrefused --output "$out" "$url"
      ;;
    python3)
      command -v python3 >/dev/null || kiln_die "neither curl nor python3 is available to download $url"
      python3 - "$url" "$out" "$tries" <<'PY'
import shutil
import sys
import time
import urllib.error
import urllib.request

url, out, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
for attempt in range(1, tries + 2):
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        sys.exit(0)
    except urllib.error.HTTPError as exc:
        print("download %s: HTTP %s" % (url, exc.code), file=sys.stderr)
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            sys.exit(22)
    except (urllib.error.URLError, OSError) as exc:
        print("download %s: %s" % (url, exc), file=sys.stderr)
    if attempt <= tries:
        time.sleep(3)
sys.exit(1)
PY
      ;;
    *) kiln_die "KILN_FETCH_TOOL='$tool' is not curl or python3" ;;
  esac
}

# download URL DEST SHA256|SHA512 [CONFIG_KEY]: fetch, verify, then move into place. Refuses to
# run without a checksum. A DEST that already has the checksum is kept (no network).
download() {
  local url=$1 dest=$2 sum=${3:-} what=${4:-"the checksum of $1"} part
  [[ -n "$url" ]] || kiln_die "download: no URL given"
  if [[ -z "$sum" ]]; then
    kiln_die "refusing to download $url without a checksum: pin $what (sha256) in config.json"
  fi
  _kiln_checksum_algo "$sum" >/dev/null ||
    kiln_die "'$sum' ($what) is not a sha256 (64 hex) or sha512 (128 hex) checksum"
  KILN_CHANGED=false
  if [[ -f "$dest" ]] && _kiln_checksum_matches "$dest" "$sum"; then
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  part="$dest.part"
  rm -f "$part"
  kiln_log "downloading $url"
  if ! _kiln_fetch "$url" "$part"; then
    rm -f "$part"
    kiln_die "could not download $url (after retries); check the URL ($what belongs to it) and the network"
  fi
  if ! _kiln_checksum_matches "$part" "$sum"; then
    local actual algo
    algo=$(_kiln_checksum_algo "$sum")
    actual=$("${algo}sum" "$part" | cut -d' ' -f1)
    rm -f "$part"
    kiln_die "checksum mismatch for $url: expected $algo ${sum#*:} ($what), got $actual. If the file changed upstream, verify it and update $what"
  fi
  mv -f "$part" "$dest"
  KILN_CHANGED=true
}

# kiln_fingerprint FPR [CONFIG_KEY]: sets KILN_FINGERPRINT to the normalised (upper-case, no
# spaces) fingerprint, or dies with a clear error when it is empty or not a full fingerprint.
kiln_fingerprint() {
  local fpr=${1:-} key=${2:-components.$KILN_COMPONENT.key_fingerprint}
  fpr=${fpr//[[:space:]]/}
  fpr=${fpr#0x}
  fpr=${fpr^^}
  if [[ -z "$fpr" ]]; then
    kiln_die "$key is empty: pin the full fingerprint of the repository signing key (on a connected machine: gpg --show-keys --with-fingerprint KEYFILE)"
  fi
  if [[ ! "$fpr" =~ ^([0-9A-F]{40}|[0-9A-F]{64})$ ]]; then
    kiln_die "$key '$1' is not a full key fingerprint (40 hex digits)"
  fi
  KILN_FINGERPRINT=$fpr
}

# gpg_key_check FILE FINGERPRINT [CONFIG_PREFIX]: FILE must hold the key with that fingerprint,
# neither revoked nor expired (a repository signed by an expired key fails with EXPKEYSIG).
gpg_key_check() {
  local file=$1 prefix=${3:-components.$KILN_COMPONENT} want home listing now
  kiln_fingerprint "${2:-}" "$prefix.key_fingerprint"
  want=$KILN_FINGERPRINT
  [[ -s "$file" ]] || kiln_die "key file $file is empty or missing ($prefix.key_url)"
  if ! command -v gpg >/dev/null; then
    case "$KILN_FAMILY" in apt) pkg_install gpg ;; dnf) pkg_install gnupg2 ;; esac
  fi
  home=$(mktemp -d)
  listing=$(GNUPGHOME="$home" gpg --batch --no-tty --with-colons --fixed-list-mode \
    --show-keys "$file" 2>/dev/null) || listing=""
  rm -rf "$home"
  [[ -n "$listing" ]] || kiln_die "$file ($prefix.key_url) is not an OpenPGP public key"
  now=$(date +%s)
  # One line per key of the matching certificate: kind validity expires capabilities fpr.
  local rows
  rows=$(awk -F: -v want="$want" '
    $1 == "pub" { cert++; kind = "pub" }
    $1 == "sub" { kind = "sub" }
    $1 == "pub" || $1 == "sub" { v[cert, ++n[cert]] = kind " " ($2 == "" ? "-" : $2) " " ($7 == "" ? 0 : $7) " " ($12 == "" ? "-" : $12) }
    $1 == "fpr" { f[cert, n[cert]] = $10; if (kind == "pub" && toupper($10) == want) hit = cert }
    END { if (hit) for (i = 1; i <= n[hit]; i++) print v[hit, i], f[hit, i] }
  ' <<<"$listing")
  if [[ -z "$rows" ]]; then
    local found
    found=$(awk -F: '$1 == "pub" { p = 1; next } $1 == "fpr" && p { print $10; p = 0 }' <<<"$listing" | paste -sd' ' -)
    kiln_die "$file ($prefix.key_url) holds key(s) $found, not $want ($prefix.key_fingerprint): the key changed or the fingerprint is wrong; verify it and update $prefix.key_fingerprint"
  fi
  local kind validity expires caps fpr signing=0 usable=0 latest=0 soonest=0
  local primary_validity="" primary_expires=0
  while read -r kind validity expires caps fpr; do
    if [[ "$kind" == pub ]]; then
      primary_validity=$validity
      primary_expires=$expires
    fi
    [[ "$caps" == *s* ]] || continue # not a signing key
    signing=$((signing + 1))
    if [[ "$validity" == r ]]; then
      continue
    fi
    if [[ "$validity" == e ]] || ((expires > 0 && expires <= now)); then
      ((expires > latest)) && latest=$expires
      continue
    fi
    usable=$((usable + 1))
    if ((expires > 0 && (soonest == 0 || expires < soonest))); then soonest=$expires; fi
  done <<<"$rows"
  if [[ "$primary_validity" == r ]]; then
    kiln_die "the key $want in $file ($prefix.key_url) is REVOKED; point $prefix.key_url at the repository's current key and update $prefix.key_fingerprint"
  fi
  if [[ "$primary_validity" == e ]] || ((primary_expires > 0 && primary_expires <= now)); then
    latest=$primary_expires
    usable=0
  fi
  if ((signing == 0)); then
    kiln_die "the key $want in $file ($prefix.key_url) has no key that can sign; it cannot be a repository signing key"
  fi
  if ((usable == 0)); then
    local when="an unknown date"
    ((latest > 0)) && when=$(date -u -d "@$latest" +%Y-%m-%d)
    kiln_die "the repository signing key $want in $file ($prefix.key_url) EXPIRED on $when (UTC); apt would refuse the repository (EXPKEYSIG). Fix: point $prefix.key_url at the renewed key published by the repository owner and set $prefix.key_fingerprint to its fingerprint (gpg --show-keys KEYFILE), or set $prefix.package_url to a package you verified yourself"
  fi
  if ((soonest > 0 && soonest - now < 60 * 86400)); then
    kiln_warn "the signing key $want in $file expires on $(date -u -d "@$soonest" +%Y-%m-%d) (UTC); images baked after that cannot install from the repository until $prefix.key_url points at a renewed key"
  fi
  kiln_log "key $want verified ($file)"
}

# ---------------------------------------------------------------------------------------------
# kiln's own Python packages (stdlib only, Python >= 3.9)

# kiln_python_version_of DIR: __version__ from DIR/__init__.py, or nothing.
kiln_python_version_of() {
  sed -n "s/^__version__[[:space:]]*=[[:space:]]*['\"]\\([^'\"]*\\)['\"].*/\\1/p" "$1/__init__.py" 2>/dev/null | head -n 1
}

# install_kiln_python_package NAME WRAPPER: $KILN_SRC/NAME -> /opt/kiln/lib/NAME, compiled and
# import-checked with this image's python3, plus a wrapper that runs `python3 -m NAME`.
install_kiln_python_package() {
  local name=$1 wrapper=$2 src="$KILN_SRC/$1" dest="/opt/kiln/lib/$1"
  if [[ ! -f "$src/__init__.py" || ! -f "$src/__main__.py" ]]; then
    kiln_die "$src is not a runnable package (__init__.py and __main__.py expected): Packer uploads $name/ next to components/ (KILN_SRC=$KILN_SRC)"
  fi
  pkg_install python3
  install -d -m 0755 /opt/kiln /opt/kiln/lib
  install_tree "$src" "$dest"
  if $KILN_CHANGED; then
    if ! python3 -m compileall -q -f "$dest"; then
      kiln_die "$name does not compile with this image's $(python3 -V 2>&1) (kiln's baked packages must run on Python 3.9)"
    fi
  fi
  if ! PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/kiln/lib python3 -c "import $name" >/dev/null; then
    kiln_die "$name fails to import with this image's $(python3 -V 2>&1)"
  fi
  write_file_if_changed "$wrapper" 0755 <<EOF
#!/bin/sh
# Installed by kiln (component $KILN_COMPONENT): runs /opt/kiln/lib/$name with the system python3.
PYTHONPATH=/opt/kiln/lib exec python3 -m $name "\$@"
EOF
}
