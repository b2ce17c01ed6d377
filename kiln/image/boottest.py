"""`invoke test --target T --builder qemu`: boot a built image, make it a standalone node
with the configurator, and run the boot-phase testinfra suites against it."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.config.load import Config
from kiln.config.shapes import node_specs, parse_shape
from kiln.config.targets import select_pairs
from kiln.errors import KilnError, UserError
from kiln.image import accel as accel_mod
from kiln.image import boximage, ovf, virtualbox
from kiln.image.boximage import BoxImage
from kiln.image.verify import run_suites
from kiln.image.vm import VIRTIO, Hardware, RunningVM, booted
from kiln.keys import ensure_build_key
from kiln.paths import Paths
from kiln.runner import Result


@dataclass(frozen=True)
class BootTestResult:
    pair: str
    passed: bool
    report: Path
    seconds: dict[str, float]


def standalone_spec(config: Config, ip: str) -> dict[str, object]:
    """The playa-mesos trial node, addressed as the guest sees itself."""
    cluster = {**config["cluster"], "network_prefix": ip.rsplit(".", 1)[0],
               "first_host": int(ip.rsplit(".", 1)[1])}
    (spec,) = node_specs(parse_shape("1"), cluster)
    return spec


def boot_test(config: Config, paths: Paths, target: str, builder: str = "qemu", *,
              accel: str | None = None, quiet: bool = False) -> BootTestResult:
    (pair,) = select_pairs(config.data, [target], [builder])
    if builder not in ("qemu", "virtualbox"):
        raise UserError(f"boot tests run disk images under QEMU; {builder} artifacts are not supported",
                        "use --builder qemu or virtualbox")
    workdir = paths.build / "verify" / f"{pair.name}-boot"
    image, hardware = _image_of(pair.name, paths, workdir, target, builder)
    probe = accel_mod.resolve(accel or config["build"]["accelerator"], paths.cache)
    print(f"==> accelerator: {probe.accel} ({probe.reason})", flush=True)
    seconds: dict[str, float] = {}
    report = paths.reports / f"{pair.name}-boot.xml"
    t0 = time.monotonic()
    # booted() starts QEMU through kiln.runner: it ends with kiln and is in the run record.
    with booted(image, workdir, key=ensure_build_key(paths.build), user=pair.target.ssh_username,
                accel=probe.accel, name=pair.name, memory_mb=config["trial"]["memory_mb"],
                cpus=config["trial"]["cpus"], hardware=hardware) as vm:
        seconds["boot to ssh"] = round(time.monotonic() - t0, 1)
        result = _test_booted(config, paths, pair.name, vm, report, seconds, quiet)
    return BootTestResult(pair.name, result.returncode == 0, report, seconds)


def _test_booted(config: Config, paths: Paths, pair: str, vm: RunningVM, report: Path,
                 seconds: dict[str, float], quiet: bool) -> Result:
    t1 = time.monotonic()
    ip = vm.ssh("hostname -I").stdout.split()[0]
    spec = json.dumps(standalone_spec(config, ip), indent=2)
    command = (f"sudo install -d -m 0755 /etc/kiln && printf '%s' {_shell_quote(spec)}"
               " | sudo tee /etc/kiln/node.json >/dev/null"
               " && sudo kiln-node apply /etc/kiln/node.json")
    apply = vm.ssh(command, timeout=600)
    print(apply.stdout, end="", flush=True)
    if apply.returncode != 0:
        raise KilnError(f"kiln-node apply failed on {pair} (exit {apply.returncode}):\n"
                        f"{apply.stdout}{apply.stderr}")
    seconds["apply node spec"] = round(time.monotonic() - t1, 1)
    t2 = time.monotonic()
    result = run_suites(paths, ssh_config=vm.ssh_config, hosts=[vm.name], phase="boot",
                        report=report, quiet=quiet, log=paths.logs / f"{pair}-boot.log")
    seconds["testinfra"] = round(time.monotonic() - t2, 1)
    return result


def _image_of(pair: str, paths: Paths, workdir: Path, target: str,
              builder: str) -> tuple[Path | BoxImage, Hardware]:
    """The disk to boot and the hardware to boot it on: the libvirt box's qcow2 (read inside the
    box) on virtio, or a VirtualBox box's VMDK on what VirtualBox would give it (AHCI, e1000
    with the box's MAC)."""
    directory = paths.artifacts / pair
    hint = f"run `invoke build --target {target} --builder {builder}`"
    box = directory / f"{pair}.box"
    if not box.exists():
        raise UserError(f"no built box at {box}", hint)
    if builder == "qemu":
        return boximage.locate(box), VIRTIO
    meta = json.loads((directory / "kiln-metadata.json").read_text(encoding="utf-8"))
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / virtualbox.DISK_NAME
    with tarfile.open(box) as tar:
        member = tar.getmember(virtualbox.DISK_NAME)
        with tar.extractfile(member) as src, disk.open("wb") as dst:  # type: ignore[union-attr]
            shutil.copyfileobj(src, dst, 1 << 20)
    mac = ovf.mac_colons(meta["virtualbox"]["base_mac"])
    return disk, Hardware("virtualbox", "vmdk", mac)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
