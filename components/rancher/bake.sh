#!/usr/bin/env bash
# rancher: the Rancher Mesos executor and scheduler (2015, unmaintained, no published
# binaries), only when the user pins their URLs and sha256 in components.rancher; off by
# default. Units read /etc/kiln/rancher.env (CATTLE_URL, CATTLE_ACCESS_KEY, CATTLE_SECRET_KEY,
# MESOS_MASTER, IP_CIDR; written by kiln-node) and are installed disabled.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

executor_url=${KILN_RANCHER_EXECUTOR_URL:-}
scheduler_url=${KILN_RANCHER_SCHEDULER_URL:-}
if [[ -z "$executor_url" && -z "$scheduler_url" ]]; then
  # Enabled but off: say so in the manifest, so that the suites can tell "off" from "failed".
  record_component_off rancher "components.rancher.executor_url and scheduler_url are empty: no Rancher binary to install (off until you pin one with its sha256)"
  exit 0
fi
# Check both before downloading either.
if [[ -n "$executor_url" ]]; then
  kiln_need KILN_RANCHER_EXECUTOR_SHA256 components.rancher.executor_sha256
fi
if [[ -n "$scheduler_url" ]]; then
  kiln_need KILN_RANCHER_SCHEDULER_SHA256 components.rancher.scheduler_sha256
fi

install -d -m 0755 /etc/kiln

# install_binary ROLE URL SHA256
install_binary() {
  local role=$1 url=$2 sum=$3 bin="/usr/local/bin/rancher-mesos-$1"
  download "$url" "$bin" "$sum" "components.rancher.${role}_sha256"
  chmod 0755 "$bin"
  install_unit "rancher-mesos-$role" <<EOF
[Unit]
Description=Rancher Mesos $role (kiln; components.rancher.${role}_url)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# CATTLE_URL, CATTLE_ACCESS_KEY, CATTLE_SECRET_KEY, MESOS_MASTER, IP_CIDR (kiln-node)
EnvironmentFile=/etc/kiln/rancher.env
ExecStart=$bin
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
EOF
  service_disable "rancher-mesos-$role.service"
}

fields=()
if [[ -n "$executor_url" ]]; then
  install_binary executor "$executor_url" "$KILN_RANCHER_EXECUTOR_SHA256"
  fields+=(executor_url="$executor_url" executor_sha256="$KILN_RANCHER_EXECUTOR_SHA256")
fi
if [[ -n "$scheduler_url" ]]; then
  install_binary scheduler "$scheduler_url" "$KILN_RANCHER_SCHEDULER_SHA256"
  fields+=(scheduler_url="$scheduler_url" scheduler_sha256="$KILN_RANCHER_SCHEDULER_SHA256")
fi

# The binaries carry no version: what identifies them is the sha256 of the installed file (the
# executor's first), as the image holds it (download checked it against the pinned one).
if [[ -n "$executor_url" ]]; then
  binary=/usr/local/bin/rancher-mesos-executor
else
  binary=/usr/local/bin/rancher-mesos-scheduler
fi
version="sha256:$(sha256sum "$binary" | cut -d ' ' -f 1)"
extra=$(kiln_json "${fields[@]}")
record_component rancher "$version" "$extra"
