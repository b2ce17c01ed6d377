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

# The recorded version is what the tarball holds: Marathon's own jar in lib/
# (mesosphere.marathon.marathon-1.8.222-86475ddac.jar -> 1.8.222-86475ddac), else the tarball's
# name (marathon-1.8.222-86475ddac.tgz); never components.marathon.version, which only warns when
# it disagrees. /opt/marathon-<version>/.kiln-source remembers which tarball is installed there.
name=${url%%\?*}
name=${name##*/}
named=$name
for suffix in .tgz .tar.gz; do
  named=${named%"$suffix"}
done
named=${named#marathon-}
if [[ "$named" == "$name" || ! "$named" =~ ^[0-9] ]]; then
  named=""
fi

ensure_java
kiln_system_user marathon /var/lib/marathon
install -d -m 0755 /etc/marathon /etc/kiln

install_dir=""
for dir in /opt/marathon-*; do
  if [[ -f "$dir/.kiln-source" && "$(cat "$dir/.kiln-source")" == "$sum $url" ]]; then
    install_dir=$dir
  fi
done
if [[ -z "$install_dir" ]]; then
  kiln_tmpdir tmp
  download "$url" "$tmp/marathon.tgz" "$sum" components.marathon.sha256
  mkdir -p "$tmp/x"
  tar -C "$tmp/x" --strip-components=1 --no-same-owner -xzf "$tmp/marathon.tgz"
  [[ -x "$tmp/x/bin/marathon" ]] || kiln_die "$url is not a Marathon tarball (no bin/marathon inside)"
  version=$named
  jar=$(find "$tmp/x/lib" -maxdepth 1 -name '*marathon-[0-9]*.jar' 2>/dev/null | sort | head -n 1)
  if [[ -n "$jar" ]]; then
    version=$(basename "$jar" .jar)
    version=${version##*marathon-}
  fi
  [[ -n "$version" ]] ||
    kiln_die "cannot tell which Marathon version $url holds: neither its file name (marathon-<version>.tgz) nor a lib/*marathon-<version>.jar inside names one"
  printf '%s %s\n' "$sum" "$url" >"$tmp/x/.kiln-source"
  chown -R root:root "$tmp/x"
  install_dir="/opt/marathon-$version"
  rm -rf "$install_dir"
  mv "$tmp/x" "$install_dir"
  kiln_log "installed Marathon $version in $install_dir"
fi
version=${install_dir#/opt/marathon-}
if [[ -n "${KILN_MARATHON_VERSION:-}" && "$version" != "$KILN_MARATHON_VERSION"* ]]; then
  kiln_warn "the tarball holds Marathon $version, components.marathon.version says $KILN_MARATHON_VERSION (the manifest records $version)"
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
