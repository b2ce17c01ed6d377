#!/usr/bin/env bash
# marathon: Marathon (archived upstream) from a pinned tarball on the distro JRE, in
# /opt/marathon-<version> with /opt/marathon pointing at it. marathon.service reads
# /etc/kiln/marathon.env (written by kiln-node at boot) and is installed disabled.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

kiln_need KILN_MARATHON_URL components.marathon.url
kiln_need KILN_MARATHON_SHA256 components.marathon.sha256
url=$KILN_MARATHON_URL
sum=$KILN_MARATHON_SHA256

# The version is the tarball's name (marathon-1.8.222-86475ddac.tgz -> 1.8.222-86475ddac), the
# exact build; components.marathon.version when the name says nothing.
name=${url%%\?*}
name=${name##*/}
version=$name
for suffix in .tgz .tar.gz; do
  version=${version%"$suffix"}
done
version=${version#marathon-}
if [[ "$version" == "$name" || ! "$version" =~ ^[0-9] ]]; then
  kiln_need KILN_MARATHON_VERSION components.marathon.version
  version=$KILN_MARATHON_VERSION
fi
install_dir="/opt/marathon-$version"

ensure_java
kiln_system_user marathon /var/lib/marathon
install -d -m 0755 /etc/marathon /etc/kiln

current=""
if [[ -f "$install_dir/.kiln-source" ]]; then
  current=$(cat "$install_dir/.kiln-source")
fi
if [[ "$current" != "$sum $url" ]]; then
  kiln_tmpdir tmp
  download "$url" "$tmp/marathon.tgz" "$sum" components.marathon.sha256
  mkdir -p "$tmp/x"
  tar -C "$tmp/x" --strip-components=1 --no-same-owner -xzf "$tmp/marathon.tgz"
  [[ -x "$tmp/x/bin/marathon" ]] || kiln_die "$url is not a Marathon tarball (no bin/marathon inside)"
  printf '%s %s\n' "$sum" "$url" >"$tmp/x/.kiln-source"
  chown -R root:root "$tmp/x"
  rm -rf "$install_dir"
  mv "$tmp/x" "$install_dir"
  kiln_log "installed Marathon $version in $install_dir"
fi
kiln_symlink "marathon-$version" /opt/marathon

install_unit marathon <<'EOF'
[Unit]
Description=Marathon (kiln)
Documentation=https://mesosphere.github.io/marathon/
After=network-online.target zookeeper.service mesos-master.service
Wants=network-online.target

[Service]
Type=simple
User=marathon
Group=marathon
WorkingDirectory=/var/lib/marathon
# MARATHON_MASTER, MARATHON_ZK, MARATHON_HOSTNAME, MARATHON_HTTP_PORT (kiln-node)
EnvironmentFile=/etc/kiln/marathon.env
ExecStart=/opt/marathon/bin/marathon
SuccessExitStatus=143
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
EOF
service_disable marathon.service

extra=$(kiln_json url="$url" sha256="$sum" install_dir="$install_dir")
record_component marathon "$version" "$extra"
