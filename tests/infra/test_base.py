"""base component: time sync, limits, sysctl, sshd hardening, resolvable hostname."""

from __future__ import annotations

from conftest import require


def test_sshd_refuses_passwords_and_root(host, components) -> None:
    require(components, "base")
    config = host.run("sudo sshd -T").stdout.lower()
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


def test_open_file_limit(host, components) -> None:
    base = require(components, "base")
    limit = int(host.run("systemctl show --property DefaultLimitNOFILE --value").stdout.strip())
    assert limit >= int(base.get("nofile_limit", 65536))


def test_ssh_host_keys_come_back_at_first_boot(host, components) -> None:
    require(components, "base")
    assert host.run("systemctl is-enabled kiln-ssh-hostkeys.service").stdout.strip() == "enabled"
