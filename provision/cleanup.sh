#!/usr/bin/env bash
# cleanup: image hygiene after every component ran: nothing of the build machine, its users or
# its package downloads stays in the image. Clones must not share SSH host keys or a machine
# id. (Packer removes /tmp/kiln itself afterwards.)
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

# --- SSH host keys: only safe to drop when the image regenerates them at first boot
hostkeys_state=$(systemctl is-enabled kiln-ssh-hostkeys.service 2>/dev/null) || true
if [[ "$hostkeys_state" != enabled ]]; then
  kiln_die "kiln-ssh-hostkeys.service is not enabled (did the base component run?); without it an image without host keys would boot with no working sshd"
fi
rm -f /etc/ssh/ssh_host_*
kiln_log "removed SSH host keys (kiln-ssh-hostkeys.service recreates them at first boot)"

# --- machine id: empty means "generate one at first boot"
if [[ -e /etc/machine-id ]]; then
  truncate -s 0 /etc/machine-id
fi
rm -f /var/lib/dbus/machine-id

# --- shell histories and private keys of root and every user (authorized_keys stay)
homes=(/root)
for home in /home/*; do
  if [[ -d "$home" ]]; then
    homes+=("$home")
  fi
done
find "${homes[@]}" -maxdepth 1 -type f \( -name '.*_history' -o -name '.lesshst' -o -name '.viminfo' \) \
  -print -delete
find "${homes[@]}" -type f -name 'id_*' ! -name '*.pub' -print -delete
find "${homes[@]}" -type f -path '*/.ssh/*' ! -name 'authorized_keys*' ! -name '*.pub' \
  ! -name known_hosts ! -name config -print0 |
  while IFS= read -r -d '' f; do
    if head -c 200 "$f" | grep -q 'PRIVATE KEY'; then
      rm -f "$f"
      kiln_log "removed private key $f"
    fi
  done

# --- package caches and lists
case "$KILN_FAMILY" in
  apt)
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/lib/apt/kiln-update.stamp
    ;;
  dnf)
    dnf clean all -q
    rm -rf /var/cache/dnf/*
    ;;
esac
rm -rf /var/cache/kiln

# --- first-boot state other tools keep
if command -v cloud-init >/dev/null; then
  cloud-init clean --logs >/dev/null 2>&1 || kiln_warn "cloud-init clean failed"
fi
rm -f /var/lib/dhcp/*.leases
rm -rf /var/tmp/* 2>/dev/null || true

# --- logs: rotated ones go, current ones are emptied, the journal is dropped
if kiln_systemd_live && command -v journalctl >/dev/null; then
  journalctl --rotate >/dev/null 2>&1 || true
  journalctl --vacuum-time=1s >/dev/null 2>&1 || true
fi
if [[ -d /var/log ]]; then
  find /var/log -type f \( -name '*.gz' -o -name '*.xz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
  find /var/log/journal -type f -name '*.journal*' -delete 2>/dev/null || true
  find /var/log -type f -exec truncate -s 0 {} +
fi
kiln_log "emptied /var/log"

# --- optional: zero free space so the disk image compresses well (slow; build.zero_fill)
if [[ "${KILN_ZERO_FILL:-false}" == true ]]; then
  kiln_log "zero-filling free space"
  kiln_on_exit "rm -f /kiln-zero.fill"
  dd if=/dev/zero of=/kiln-zero.fill bs=1M status=none 2>/dev/null || true # ends with ENOSPC
  sync
  rm -f /kiln-zero.fill
  sync
fi
kiln_log "image cleaned"
