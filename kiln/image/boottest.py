"""`invoke test --target T --builder qemu`: boot a built image, make it a standalone node
with the configurator, and run the boot-phase testinfra suites against it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.config.load import Config
from kiln.config.shapes import node_specs, parse_shape
from kiln.config.targets import select_pairs
from kiln.errors import KilnError, UserError
from kiln.image import accel as accel_mod
from kiln.image.verify import run_suites
from kiln.image.vm import booted
from kiln.keys import ensure_build_key
from kiln.paths import Paths


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
    if builder != "qemu":
        raise UserError(f"boot tests run qcow2 images under QEMU; {builder} artifacts are not supported",
                        "use --builder qemu")
    image = paths.artifacts / pair.name / f"{pair.name}.qcow2"
    if not image.exists():
        raise UserError(f"no built image at {image}", f"run `invoke build --target {target} --builder qemu`")
    probe = accel_mod.resolve(accel or config["build"]["accelerator"], paths.cache)
    print(f"==> accelerator: {probe.accel} ({probe.reason})", flush=True)
    seconds: dict[str, float] = {}
    workdir = paths.build / "verify" / f"{pair.name}-boot"
    report = paths.reports / f"{pair.name}-boot.xml"
    t0 = time.monotonic()
    with booted(image, workdir, key=ensure_build_key(paths.build), user=pair.target.ssh_username,
                accel=probe.accel, name=pair.name, memory_mb=config["trial"]["memory_mb"],
                cpus=config["trial"]["cpus"]) as vm:
        seconds["boot to ssh"] = round(time.monotonic() - t0, 1)
        t1 = time.monotonic()
        ip = vm.ssh("hostname -I").stdout.split()[0]
        spec = json.dumps(standalone_spec(config, ip), indent=2)
        command = (f"sudo install -d -m 0755 /etc/kiln && printf '%s' {_shell_quote(spec)}"
                   " | sudo tee /etc/kiln/node.json >/dev/null"
                   " && sudo kiln-node apply /etc/kiln/node.json")
        apply = vm.ssh(command, timeout=600)
        print(apply.stdout, end="", flush=True)
        if apply.returncode != 0:
            raise KilnError(f"kiln-node apply failed on {pair.name} (exit {apply.returncode}):\n"
                            f"{apply.stdout}{apply.stderr}")
        seconds["apply node spec"] = round(time.monotonic() - t1, 1)
        t2 = time.monotonic()
        result = run_suites(paths, ssh_config=vm.ssh_config, hosts=[vm.name], phase="boot",
                            report=report, quiet=quiet, log=paths.logs / f"{pair.name}-boot.log")
        seconds["testinfra"] = round(time.monotonic() - t2, 1)
    return BootTestResult(pair.name, result.returncode == 0, report, seconds)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
