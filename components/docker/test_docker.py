"""Docker: disabled at bake time; at boot it runs a container made from a local rootfs
(no registry is reachable here, so the image is `docker import`ed from a tarball)."""

from __future__ import annotations

from kiln_infra import boot_only, for_roles, require, unit_active, unit_enabled


def test_installed_and_disabled_when_baked(host, components, phase) -> None:
    require(components, "docker")
    assert host.exists("docker")
    if host.system_info.distribution in ("debian", "ubuntu"):
        # Without apparmor_parser `docker run` fails on these distributions.
        assert host.package("apparmor").is_installed
    if phase == "bake":
        assert not unit_enabled(host, "docker")


def test_runs_a_container_from_a_local_rootfs(host, components, phase, role) -> None:
    require(components, "docker")
    boot_only(phase)
    for_roles(role, "standalone", "agent")
    assert unit_active(host, "docker")
    build = host.run(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp /bin/busybox $d/bin/ 2>/dev/null "
        "|| cp $(command -v sh) $d/bin/sh; "
        "for lib in $(ldd $d/bin/* 2>/dev/null | grep -o '/[^ ]*'); do "
        "mkdir -p $d$(dirname $lib); cp -L $lib $d$lib; done; "
        "sudo tar -C $d -c . | sudo docker import - kiln/infra-test:latest >/dev/null; rm -rf $d")
    assert build.rc == 0, build.stderr
    out = host.run("sudo docker run --rm kiln/infra-test:latest /bin/sh -c 'echo kiln-container-ok'")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "kiln-container-ok"
