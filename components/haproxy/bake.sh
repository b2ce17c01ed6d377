#!/usr/bin/env bash
# haproxy: the distro's HAProxy plus kiln's Marathon -> HAProxy bridge (kiln_bridge), which
# rewrites haproxy.cfg from Marathon's tasks. Both units are installed disabled; kiln-node
# enables them on masters.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

BRIDGE_DEFAULTS=/etc/default/kiln-haproxy-bridge

# _whole_number VAR CONFIG_KEY MIN MAX: die unless VAR holds a whole number in range; rewrite it
# without leading zeros, so the environment file says what bash and Python both read as decimal.
_whole_number() {
  local var=$1 key=$2 min=$3 max=$4 value
  kiln_need "$var" "$key"
  value=${!var}
  if [[ ! "$value" =~ ^[0-9]{1,9}$ ]] || ((10#$value < min || 10#$value > max)); then
    kiln_die "$key must be a whole number from $min to $max (got '$value' as $var in $KILN_ENV)"
  fi
  printf -v "$var" '%d' "$((10#$value))"
}

# Before anything is installed: a bad value fails the bake at once.
_whole_number KILN_HAPROXY_VHOST_PORT components.haproxy.vhost_port 1 65535
_whole_number KILN_HAPROXY_POLL_SECONDS components.haproxy.poll_seconds 1 3600

pkg_install_listed
service_disable haproxy.service

# The bridge's haproxy.cfg runs the workers as user haproxy, chrooted to /var/lib/haproxy; the
# package provides both. Checked here so a package that differs fails the bake, not a reload.
getent passwd haproxy >/dev/null ||
  kiln_die "the haproxy package created no user haproxy, which kiln-haproxy-bridge's haproxy.cfg runs the workers as"
[[ -d /var/lib/haproxy ]] ||
  kiln_die "the haproxy package created no /var/lib/haproxy, which kiln-haproxy-bridge's haproxy.cfg chroots the workers to"

# The runtime API socket lives in /run/haproxy. Debian's package creates it with tmpfiles.d,
# others need not; making it before every start costs nothing where it already exists.
install_cmd=$(command -v install) || kiln_die "coreutils' install is missing"
write_file_if_changed /etc/systemd/system/haproxy.service.d/kiln.conf 0644 <<EOF
# Installed by kiln (components/haproxy/bake.sh): /run/haproxy holds the stats socket of the
# haproxy.cfg that kiln-haproxy-bridge writes.
[Service]
ExecStartPre=$install_cmd -d -m 2775 -o haproxy -g haproxy /run/haproxy
EOF
if $KILN_CHANGED && kiln_systemd_live; then
  systemctl daemon-reload
fi

install_kiln_python_package kiln_bridge /usr/local/sbin/kiln-haproxy-bridge

write_file_if_changed "$BRIDGE_DEFAULTS" 0644 <<EOF
# Installed by kiln (components/haproxy/bake.sh) from config.json's components.haproxy at bake time.
# kiln-haproxy-bridge.service reads /etc/kiln/haproxy-bridge.env (kiln-node, at boot) after
# this file: a variable set there wins.
KILN_BRIDGE_VHOST_PORT=$KILN_HAPROXY_VHOST_PORT
KILN_BRIDGE_POLL_SECONDS=$KILN_HAPROXY_POLL_SECONDS
EOF

install_unit kiln-haproxy-bridge <<UNIT
[Unit]
Description=kiln Marathon -> HAProxy bridge
After=network-online.target haproxy.service
Wants=network-online.target

[Service]
Type=simple
# Bake-time defaults, then kiln-node's boot-time values (KILN_BRIDGE_MARATHON_URLS and friends):
# systemd lets the later file win. The first has no '-': the image ships it, and without it the
# bridge would silently fall back to its built-in port and poll interval.
EnvironmentFile=$BRIDGE_DEFAULTS
EnvironmentFile=-/etc/kiln/haproxy-bridge.env
ExecStart=/usr/local/sbin/kiln-haproxy-bridge run
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
service_disable kiln-haproxy-bridge.service

version=$(pkg_version haproxy)
bridge_version=$(kiln_python_version_of /opt/kiln/lib/kiln_bridge)
[[ -n "$bridge_version" ]] || kiln_die "/opt/kiln/lib/kiln_bridge/__init__.py has no __version__: cannot record what is installed"
extra=$(kiln_json package=haproxy bridge_version="$bridge_version" \
  vhost_port:="$KILN_HAPROXY_VHOST_PORT" poll_seconds:="$KILN_HAPROXY_POLL_SECONDS")
record_component haproxy "$version" "$extra"
