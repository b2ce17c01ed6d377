"""base component: time sync, limits, sysctl, sshd hardening, resolvable hostname."""

from __future__ import annotations

from kiln_infra import require, unit_state


def test_sshd_refuses_passwords_and_root(host, components) -> None:
    require(components, "base")
    # After cleanup the image has no host keys, and `sshd -T` wants one: lend it a throwaway.
    config = host.run(
        "k=$(mktemp -u /tmp/kiln-hostkey.XXXXXX); ssh-keygen -q -t ed25519 -N '' -f $k"
        " && sudo sshd -T -h $k; rc=$?; rm -f $k $k.pub; exit $rc").stdout.lower()
    assert "passwordauthentication no" in config
    assert "permitrootlogin no" in config
    assert "kbdinteractiveauthentication no" in config


def test_hostname_resolves(host, components) -> None:
    require(components, "base")
    name = host.run("hostname").stdout.strip()
    assert host.run(f"getent hosts {name}").rc == 0


def test_container_sysctls(host, components) -> None:
    require(components, "base")
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.sysctl("fs.inotify.max_user_watches") >= 524288


def test_open_file_limit(host, components, phase) -> None:
    base = require(components, "base")
    wanted = int(base.get("nofile_limit", 65536))
    if phase == "bake":  # the manager picks the drop-in up at the next boot
        conf = host.run("cat /etc/systemd/system.conf.d/*.conf").stdout
        values = [ln.split("=", 1)[1] for ln in conf.splitlines() if ln.startswith("DefaultLimitNOFILE=")]
        assert values and int(values[-1].split(":")[0]) >= wanted
        return
    limit = host.run("sudo systemctl show --property DefaultLimitNOFILE --value").stdout.strip()
    assert int(limit) >= wanted


def test_ssh_host_keys_come_back_at_first_boot(host, components) -> None:
    require(components, "base")
    assert unit_state(host, "kiln-ssh-hostkeys.service") == "enabled"
