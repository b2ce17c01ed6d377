#!/usr/bin/env bash
# zookeeper: ZooKeeper for the Mesos masters, run by kiln's own systemd unit in the foreground
# (Debian's LSB script reports success without a running server). Sources: the distro package
# (Debian/Ubuntu), or the Apache tarball (Amazon Linux 2023, or components.zookeeper.source =
# "tarball"). Either way: config dir /etc/zookeeper/conf, data /var/lib/zookeeper, user
# zookeeper, unit zookeeper.service installed disabled (kiln-node writes zoo.cfg and myid).
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

source=${KILN_ZOOKEEPER_SOURCE:-distro}
kiln_need KILN_ZOOKEEPER_PORT_CLIENT "the ZooKeeper client port (kiln.env, from components/zookeeper/component.json)"
case "$source" in
  distro | tarball) ;;
  *) kiln_die "components.zookeeper.source '$source' is not supported (distro or tarball)" ;;
esac
if [[ "$source" == distro && "$KILN_FAMILY" != apt ]]; then
  kiln_log "$KILN_TARGET has no ZooKeeper package: using the tarball (components.zookeeper.tarball_url)"
  source=tarball
fi
if [[ "$source" == tarball ]]; then
  kiln_need KILN_ZOOKEEPER_TARBALL_URL components.zookeeper.tarball_url
  tarball_sum=${KILN_ZOOKEEPER_TARBALL_SHA512:-${KILN_ZOOKEEPER_TARBALL_SHA256:-}}
  if [[ -z "$tarball_sum" ]]; then
    kiln_die "components.zookeeper.tarball_sha256 is empty: pin the sha256 of $KILN_ZOOKEEPER_TARBALL_URL (Apache publishes a .sha512 next to it; tarball_sha512 works too)"
  fi
fi

# Defaults for a single standalone server; kiln-node rewrites zoo.cfg from the node spec at boot.
write_zoo_cfg() {
  write_file_if_changed "$1/zoo.cfg" 0644 <<EOF
# kiln default (standalone). kiln-node rewrites this file at boot from the node spec.
tickTime=2000
initLimit=10
syncLimit=5
dataDir=/var/lib/zookeeper
clientPort=$KILN_ZOOKEEPER_PORT_CLIENT
4lw.commands.whitelist=ruok,stat,mntr,srvr
admin.enableServer=false
EOF
}

# Read by the unit (EnvironmentFile) and by the distro's zkCli.sh/zkServer.sh (zkEnv.sh).
# The admin server is off because its port is the one Marathon listens on; the 4-letter-word whitelist
# lets health checks use `ruok`. Values in zoo.cfg override both.
write_environment() {
  write_file_if_changed "$1/environment" 0644 <<EOF
# kiln: environment of zookeeper.service (and of the ZooKeeper command line tools)
ZOOMAIN=org.apache.zookeeper.server.quorum.QuorumPeerMain
ZOOCFGDIR=/etc/zookeeper/conf
ZOOCFG=/etc/zookeeper/conf/zoo.cfg
ZOO_LOG_DIR=/var/log/zookeeper
ZOO_LOG4J_PROP=INFO,CONSOLE
JMXLOCALONLY=true
JAVA=/usr/bin/java
JAVA_OPTS="-Dzookeeper.admin.enableServer=false -Dzookeeper.4lw.commands.whitelist=ruok,stat,mntr,srvr"
CLASSPATH="$2"
EOF
}

install_from_distro() {
  pkg_install_listed
  # The package enables its LSB script; kiln's unit below replaces it and stays disabled.
  service_disable zookeeper.service
  local conf=/etc/zookeeper/conf_kiln
  install -d -m 0755 "$conf"
  # zookeeper.jar's manifest brings slf4j-api but no binding: without one ZooKeeper logs
  # nothing at all. Add the first binding the distribution ships.
  local classpath="/etc/zookeeper/conf:/usr/share/java/zookeeper.jar" binding jar found
  for binding in "slf4j-log4j12.jar log4j-1.2.jar" "slf4j-reload4j.jar reload4j.jar" \
    "logback-classic.jar logback-core.jar"; do
    found=""
    for jar in $binding; do
      if [[ ! -f "/usr/share/java/$jar" ]]; then
        found=""
        break
      fi
      found+=":/usr/share/java/$jar"
    done
    if [[ -n "$found" ]]; then
      classpath+=$found
      break
    fi
  done
  [[ -n "$found" ]] || kiln_warn "no SLF4J logging binding in /usr/share/java: ZooKeeper will run without logs"
  write_environment "$conf" "$classpath"
  write_zoo_cfg "$conf"
  if [[ -f /etc/zookeeper/conf_example/log4j.properties ]]; then
    write_file_if_changed "$conf/log4j.properties" 0644 </etc/zookeeper/conf_example/log4j.properties
  fi
  # Debian selects the config dir with alternatives; kiln's takes over from conf_example.
  if ! update-alternatives --query zookeeper-conf 2>/dev/null | grep -Fqx "Alternative: $conf"; then
    update-alternatives --install /etc/zookeeper/conf zookeeper-conf "$conf" 50
  fi
  if [[ "$(readlink -f /etc/zookeeper/conf)" != "$conf" ]]; then
    update-alternatives --set zookeeper-conf "$conf"
  fi
  install -d -o zookeeper -g zookeeper -m 0750 /var/lib/zookeeper
  install -d -o zookeeper -g zookeeper -m 0755 /var/log/zookeeper
  version=$(pkg_version zookeeper)
  extra=$(kiln_json source=distro package=zookeeper conf_dir=/etc/zookeeper/conf)
}

install_from_tarball() {
  local url=$KILN_ZOOKEEPER_TARBALL_URL current="" tmp jar
  ensure_java
  kiln_system_user zookeeper /var/lib/zookeeper
  install -d -o zookeeper -g zookeeper -m 0755 /var/log/zookeeper
  # /opt/zookeeper-<version>/.kiln-source remembers which tarball is installed there.
  if [[ -L /opt/zookeeper && -f /opt/zookeeper/.kiln-source ]]; then
    current=$(cat /opt/zookeeper/.kiln-source)
  fi
  if [[ "$current" != "$tarball_sum $url" ]]; then
    kiln_tmpdir tmp
    download "$url" "$tmp/zookeeper.tar.gz" "$tarball_sum" components.zookeeper.tarball_sha256
    mkdir -p "$tmp/x"
    tar -C "$tmp/x" --strip-components=1 --no-same-owner -xzf "$tmp/zookeeper.tar.gz"
    jar=$(find "$tmp/x/lib" -maxdepth 1 -name 'zookeeper-[0-9]*.jar' 2>/dev/null | head -n 1)
    [[ -n "$jar" ]] || kiln_die "$url is not a ZooKeeper binary tarball (no lib/zookeeper-<version>.jar); use the -bin.tar.gz"
    version=$(basename "$jar" .jar)
    version=${version#zookeeper-}
    if [[ -n "${KILN_ZOOKEEPER_VERSION:-}" && "$version" != "$KILN_ZOOKEEPER_VERSION" ]]; then
      kiln_warn "the tarball holds ZooKeeper $version, components.zookeeper.version says $KILN_ZOOKEEPER_VERSION"
    fi
    printf '%s %s\n' "$tarball_sum" "$url" >"$tmp/x/.kiln-source"
    chown -R root:root "$tmp/x"
    rm -rf "/opt/zookeeper-$version"
    mv "$tmp/x" "/opt/zookeeper-$version"
    kiln_symlink "zookeeper-$version" /opt/zookeeper
    kiln_log "installed ZooKeeper $version in /opt/zookeeper-$version"
  fi
  version=$(readlink /opt/zookeeper)
  version=${version#zookeeper-}
  local conf=/etc/zookeeper/conf
  install -d -m 0755 /etc/zookeeper "$conf"
  write_environment "$conf" "/etc/zookeeper/conf:/opt/zookeeper/lib/*"
  write_zoo_cfg "$conf"
  local f
  for f in logback.xml log4j.properties; do
    if [[ -f "/opt/zookeeper/conf/$f" ]]; then
      write_file_if_changed "$conf/$f" 0644 <"/opt/zookeeper/conf/$f"
    fi
  done
  extra=$(kiln_json source=tarball url="$url" checksum="$tarball_sum" install_dir="/opt/zookeeper-$version" conf_dir="$conf")
}

version=""
extra="{}"
if [[ "$source" == distro ]]; then
  install_from_distro
else
  install_from_tarball
fi

install_unit zookeeper <<'EOF'
[Unit]
Description=Apache ZooKeeper (kiln)
Documentation=https://zookeeper.apache.org/
After=network-online.target
Wants=network-online.target
ConditionPathExists=/etc/zookeeper/conf/zoo.cfg

[Service]
Type=simple
User=zookeeper
Group=zookeeper
EnvironmentFile=/etc/zookeeper/conf/environment
ExecStart=/usr/bin/java -cp ${CLASSPATH} $JAVA_OPTS -Dzookeeper.log.dir=${ZOO_LOG_DIR} -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.console.threshold=INFO ${ZOOMAIN} ${ZOOCFG}
SuccessExitStatus=143
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
service_disable zookeeper.service

record_component zookeeper "$version" "$extra"
