#!/usr/bin/env bash
# base: what every kiln image needs whatever its role: time sync, generous open-file limits,
# kernel settings containers rely on, key-only SSH, a resolvable hostname, and SSH host keys
# that come back at first boot (cleanup.sh removes them from the image).
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

kiln_need KILN_VERSION "kiln's version"
nofile=${KILN_BASE_NOFILE_LIMIT:-65536}
if [[ ! "$nofile" =~ ^[0-9]+$ ]] || ((nofile < 1024)); then
  kiln_die "components.base.nofile_limit must be a whole number >= 1024 (got '$nofile')"
fi
# The soft limit is what processes get; never lower the hard limit below systemd's default.
nofile_hard=$((nofile > 524288 ? nofile : 524288))

pkg_install_listed

# --- time sync: keep an NTP daemon the image already has, else systemd-timesyncd (chrony on dnf)
time_sync=""
if pkg_installed chrony; then
  time_sync=chrony
  if [[ "$KILN_FAMILY" == dnf ]]; then service_enable chronyd.service; else service_enable chrony.service; fi
elif [[ "$KILN_FAMILY" == apt ]] && { pkg_installed ntpsec || pkg_installed ntp || pkg_installed openntpd; }; then
  time_sync=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' ntpsec ntp openntpd 2>/dev/null | awk '/^ii/ {print $2; exit}')
  kiln_log "keeping the installed NTP daemon ($time_sync)"
elif [[ "$KILN_FAMILY" == dnf ]]; then
  pkg_install chrony
  time_sync=chrony
  service_enable chronyd.service
else
  pkg_install systemd-timesyncd
  time_sync=systemd-timesyncd
  service_enable systemd-timesyncd.service
fi

# --- limits: login sessions (pam_limits) and every systemd service
write_file_if_changed /etc/security/limits.d/90-kiln-nofile.conf 0644 <<EOF
# kiln: Mesos agents, Docker and ZooKeeper hold many files and sockets open.
*    soft nofile $nofile
*    hard nofile $nofile_hard
root soft nofile $nofile
root hard nofile $nofile_hard
EOF
write_file_if_changed /etc/systemd/system.conf.d/90-kiln-limits.conf 0644 <<EOF
# kiln: default open-file limit (soft:hard) of every service.
[Manager]
DefaultLimitNOFILE=$nofile:$nofile_hard
EOF

# --- kernel settings for containers (Docker, Mesos containerizers, bridged VMs)
write_file_if_changed /etc/modules-load.d/kiln-containers.conf 0644 <<'EOF'
# kiln: overlay filesystems for Docker; br_netfilter so bridged traffic passes iptables.
overlay
br_netfilter
EOF
modules_changed=$KILN_CHANGED
write_file_if_changed /etc/sysctl.d/90-kiln-containers.conf 0644 <<'EOF'
# kiln: container networking and the watch/map counts JVMs and containers need.
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
fs.inotify.max_user_watches = 524288
fs.inotify.max_user_instances = 8192
vm.max_map_count = 262144
EOF
if { $modules_changed || $KILN_CHANGED; } && kiln_systemd_live; then
  modprobe overlay || kiln_warn "could not load the overlay module now (it loads at boot)"
  modprobe br_netfilter || kiln_warn "could not load br_netfilter now (it loads at boot)"
  sysctl -q -e -p /etc/sysctl.d/90-kiln-containers.conf || kiln_warn "some sysctl settings apply only after a reboot"
fi

# --- sshd: keys only. sshd keeps the first value it reads, so this drop-in sorts first.
sshd_config=/etc/ssh/sshd_config
if [[ -f "$sshd_config" ]] && ! grep -Eqi '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/' "$sshd_config"; then
  {
    echo "# kiln: read the drop-ins in sshd_config.d first (first value wins)"
    echo "Include /etc/ssh/sshd_config.d/*.conf"
    cat "$sshd_config"
  } | write_file_if_changed "$sshd_config" "$(stat -c %a "$sshd_config")"
fi
write_file_if_changed /etc/ssh/sshd_config.d/00-kiln-hardening.conf 0644 <<'EOF'
# kiln: key-only SSH, no direct root logins.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
EOF
sshd_changed=$KILN_CHANGED
if command -v sshd >/dev/null && compgen -G '/etc/ssh/ssh_host_*_key' >/dev/null; then
  mkdir -p /run/sshd
  if ! out=$(sshd -t 2>&1); then
    kiln_die "sshd rejects its configuration after kiln's hardening drop-in: $out"
  fi
fi
if $sshd_changed && kiln_systemd_live; then
  for unit in ssh.service sshd.service; do
    if systemctl is-active --quiet "$unit"; then
      systemctl reload "$unit" # reload keeps the provisioner's own connection
      break
    fi
  done
fi

# --- SSH host keys: cleanup.sh deletes them so clones do not share keys; recreate at first boot
install_unit kiln-ssh-hostkeys <<'EOF'
[Unit]
Description=kiln: create missing SSH host keys (removed from the image when it was baked)
Documentation=man:ssh-keygen(1)
After=local-fs.target
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service sshd.service
EOF
service_enable kiln-ssh-hostkeys.service

# --- the hostname must resolve (sudo and Java complain otherwise)
hostname_now=$(head -n 1 /etc/hostname 2>/dev/null | tr -d '[:space:]') || hostname_now=""
[[ -n "$hostname_now" ]] || hostname_now=$(hostname)
short=${hostname_now%%.*}
names=$hostname_now
if [[ "$short" != "$hostname_now" ]]; then
  names="$hostname_now $short"
fi
hosts_old=/etc/hosts
if [[ ! -f /etc/hosts ]]; then # minimal trees may have none at all
  hosts_old=$(mktemp)
  kiln_on_exit "rm -f '$hosts_old'"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$hosts_old"
fi
hosts_new=$(awk -v name="$hostname_now" -v names="$names" '
  { lines[NR] = $0 }
  $1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == name) found = 1 }
  $1 == "127.0.1.1" && !loop { loop = NR }
  END {
    for (i = 1; i <= NR; i++) {
      if (!found && i == loop) print "127.0.1.1\t" names; else print lines[i]
    }
    if (!found && !loop) print "127.0.1.1\t" names
  }' "$hosts_old")
printf '%s\n' "$hosts_new" | write_file_if_changed /etc/hosts "$(stat -c %a /etc/hosts 2>/dev/null || echo 644)"

sshd_version=none
if pkg_installed openssh-server; then
  sshd_version=$(pkg_version openssh-server)
fi
extra=$(kiln_json time_sync="$time_sync" nofile_limit:="$nofile" openssh_server="$sshd_version")
record_component base "$KILN_VERSION" "$extra"
