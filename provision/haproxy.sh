#!/usr/bin/env bash
# haproxy: the distro's HAProxy plus kiln's Marathon -> HAProxy bridge (kiln_bridge), which
# rewrites haproxy.cfg from Marathon's tasks. Both units are installed disabled; kiln-node
# enables them on masters.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

pkg_install haproxy python3
service_disable haproxy.service

install_kiln_python_package kiln_bridge /usr/local/sbin/kiln-haproxy-bridge

install_unit kiln-haproxy-bridge <<'UNIT'
[Unit]
Description=kiln Marathon -> HAProxy bridge
After=network-online.target haproxy.service
Wants=network-online.target

[Service]
Type=simple
# KILN_BRIDGE_MARATHON_URLS and friends (kiln-node)
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
extra=$(kiln_json package=haproxy bridge_version="${bridge_version:-$KILN_VERSION}")
record_component haproxy "$version" "$extra"
