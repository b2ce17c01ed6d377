#!/usr/bin/env bash
# qemu-kvm: what the Rancher Mesos executor needs to run VMs on an agent: QEMU/KVM, libvirt,
# an isolated bridge (components.qemu-kvm.bridge, default br0) managed by systemd-networkd,
# qemu-bridge-helper's allow list, and nested virtualization. The bridge has an address but no
# physical port, so it cannot take over the VM's own network.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

bridge=${KILN_QEMU_KVM_BRIDGE:-br0}
cidr=${KILN_QEMU_KVM_BRIDGE_CIDR:-}
if [[ ! "$bridge" =~ ^[A-Za-z0-9_.-]{1,15}$ ]]; then
  kiln_die "components.qemu-kvm.bridge '$bridge' is not a valid interface name (1-15 letters, digits, '_', '.', '-')"
fi
kiln_need KILN_QEMU_KVM_BRIDGE_CIDR components.qemu-kvm.bridge_cidr
if [[ ! "$cidr" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]]; then
  kiln_die "components.qemu-kvm.bridge_cidr '$cidr' is not an IPv4 address/prefix such as 192.168.200.1/24"
fi

case "$KILN_FAMILY" in
  apt)
    package=qemu-system-x86
    pkg_install_listed
    ;;
  dnf)
    package=qemu-kvm
    pkg_available qemu-kvm || kiln_die "$KILN_TARGET's repositories have no qemu-kvm package; leave qemu-kvm out of components.enabled for this target"
    pkg_install_listed
    for optional in qemu-img libvirt bridge-utils; do
      if pkg_available "$optional"; then
        pkg_install "$optional"
      else
        kiln_log "$optional is not packaged for $KILN_TARGET; skipping it"
      fi
    done
    ;;
esac

# libvirt's NAT network would add virbr0 and a dnsmasq to every node; kiln's bridge is the
# one VMs use, so the default network is defined but not started at boot.
if [[ -L /etc/libvirt/qemu/networks/autostart/default.xml ]]; then
  rm -f /etc/libvirt/qemu/networks/autostart/default.xml
  kiln_log "libvirt's default network no longer autostarts"
fi

# --- the bridge (systemd-networkd creates it at boot)
write_file_if_changed "/etc/systemd/network/50-kiln-$bridge.netdev" 0644 <<EOF
# kiln: bridge for VMs started by the Rancher Mesos executor (components.qemu-kvm)
[NetDev]
Name=$bridge
Kind=bridge
EOF
write_file_if_changed "/etc/systemd/network/50-kiln-$bridge.network" 0644 <<EOF
# kiln: the bridge's address. It has no physical port; boot does not wait for it.
[Match]
Name=$bridge

[Link]
RequiredForOnline=no

[Network]
Address=$cidr
ConfigureWithoutCarrier=yes
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

# networkd only touches links matched by a .network file: here just the bridge, so enabling it
# next to ifupdown/NetworkManager leaves eth0 alone. Its wait-online service would wait for
# links networkd does not manage, so it stays off unless networkd already ran the network.
networkd_state=$(systemctl is-enabled systemd-networkd.service 2>/dev/null) || true
if [[ "$networkd_state" != enabled ]]; then
  others=$(find /etc/systemd/network /run/systemd/network -maxdepth 1 -name '*.network' \
    ! -name "50-kiln-$bridge.network" 2>/dev/null | sort | paste -sd' ' -) || others=""
  if [[ -n "$others" ]]; then
    kiln_warn "systemd-networkd was not in use; once enabled it also manages the links matched by: $others"
  fi
  service_enable systemd-networkd.service
  service_disable systemd-networkd-wait-online.service
fi

# --- qemu-bridge-helper and nested virtualization
write_file_if_changed /etc/qemu/bridge.conf 0644 <<EOF
allow $bridge
EOF
write_file_if_changed /etc/modprobe.d/kiln-nested.conf 0644 <<'EOF'
# kiln: let VMs run their own VMs (applies when the kvm module loads next, i.e. at boot).
options kvm_intel nested=1
options kvm_amd nested=1
EOF

version=$(pkg_version "$package")
libvirt_version=none
for p in libvirt-daemon-system libvirt; do
  if pkg_installed "$p"; then
    libvirt_version=$(pkg_version "$p")
    break
  fi
done
extra=$(kiln_json package="$package" bridge="$bridge" bridge_cidr="$cidr" libvirt="$libvirt_version")
record_component qemu-kvm "$version" "$extra"
