"""Benchmark: time from `invoke up --shape S` to a ready cluster, for shapes 1, 3m and 3m2a.

    .venv/bin/python benchmarks/cluster_up.py [--shapes 1,3m,3m2a] [--accel auto|kvm|tcg]

Each shape is brought up from nothing (the box added and uploaded into libvirt's pool once,
outside the timing), timed until `invoke up` reports READY, then destroyed. On a machine that
must not expose VM networks (a CI host), everything runs inside a network namespace with its
own libvirtd (kiln.vagrant.netns), as the VM tests do. Prints seconds per shape and the ratio to
shape 1; the aim is a 3-node cluster ready in well under 3x the one-node time (machines boot
in parallel).

Also printed, to tell "not parallel" from "not enough CPU": how busy the host's CPUs were
during each bring-up, and the CPU seconds the VMs' QEMU processes used. Under TCG a boot is
CPU-bound, so once the host is saturated the wall time grows with the VMs' total CPU work
divided by the host's cores, however parallel the bring-up is.

Bad options and missing tools end with one `error:` line and exit code 2, before any VM or
namespace is made.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiln.config.load import load_config  # noqa: E402
from kiln.config.shapes import SHAPE_FORMS, parse_shape  # noqa: E402
from kiln.errors import KilnError, UserError  # noqa: E402
from kiln.image import accel  # noqa: E402
from kiln.paths import Paths  # noqa: E402
from kiln.vagrant import boxes, capacity, netns  # noqa: E402

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]
# Adds the trial's box to Vagrant and uploads its image into libvirt's pool, as `invoke up` does.
WARM_UP = """
from kiln.vagrant import boxes
from kiln.config.load import load_config
from kiln.paths import Paths
from kiln.runner import run, which
box = boxes.resolve(load_config(Paths()), Paths(), "libvirt")
run(boxes.add_command(box, "libvirt", which("vagrant", "")), step="vagrant box add", quiet=True)
print(boxes.seed_libvirt_pool(box, Paths().cache))
"""


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all host CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def qemu_cpu_seconds() -> float:
    """User + system CPU seconds of every running QEMU process."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if comm.startswith("qemu-system"):
            total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def fits(shape: str) -> bool:
    cfg = load_config(Paths())
    parsed = parse_shape(shape)
    if parsed.standalone:
        memory = [cfg["cluster"]["standalone"]["memory_mb"]]
    else:
        memory = ([cfg["cluster"]["master"]["memory_mb"]] * parsed.masters
                  + [cfg["cluster"]["agent"]["memory_mb"]] * parsed.agents)
    return capacity.needed_mb(memory) <= capacity.available_mb()


def bring_up(ns: netns.LibvirtNamespace, env: dict[str, str], shape: str, accel: str) -> dict[str, float]:
    name = f"bench-{shape}"
    busy0, total0 = cpu_ticks()
    started = time.monotonic()
    up = subprocess.run(ns.argv([*INVOKE, "up", "--shape", shape, "--name", name, "--accel", accel,
                                 "--quiet"]), env=env, cwd=ROOT, capture_output=True, text=True)
    took = time.monotonic() - started
    busy1, total1 = cpu_ticks()
    vm_cpu = qemu_cpu_seconds()  # only this cluster's machines run now; taken before they go
    try:
        if up.returncode != 0:
            print(up.stdout[-3000:], up.stderr[-2000:], file=sys.stderr)
            raise UserError(f"invoke up --shape {shape} failed (exit {up.returncode}); its output is above")
        found = re.search(r"READY in (\d+)s \(machines (\d+)s, services (\d+)s\)", up.stdout)
        parts = [float(g) for g in found.groups()] if found else [took, 0.0, 0.0]
        return {"wall": round(took, 1), "machines": parts[1], "services": parts[2],
                "host_busy_pct": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
                "vm_cpu_s": round(vm_cpu, 1)}
    finally:
        subprocess.run(ns.argv([*INVOKE, "down", "--destroy", "--cluster", name]), env=env, cwd=ROOT,
                       capture_output=True, text=True)


def shapes_option(text: str) -> list[str]:
    """--shapes: comma-separated shapes, each one kiln knows; never empty."""
    shapes = text.split(",")  # as typed: "3m\n" or " 3m" is no shape (parse_shape matches whole names)
    if any(not s.strip() for s in shapes):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty name (e.g. --shapes 1,3m)")
    for shape in shapes:
        try:
            parse_shape(shape)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad shape {shape!r}: expected {SHAPE_FORMS}") from None
    if len(set(shapes)) != len(shapes):
        raise argparse.ArgumentTypeError(f"{text!r}: a shape named twice")
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="1,3m,3m2a", type=shapes_option,
                        help="comma-separated cluster shapes (default 1,3m,3m2a)")
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    args = parser.parse_args(argv)  # argparse: one usage line and exit 2 for a bad option
    try:
        return bench(args.shapes, args.accel)
    except (UserError, KilnError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def bench(shapes: list[str], accel_mode: str) -> int:
    # Everything that can be wrong is checked before a namespace, libvirtd or VM exists.
    why = netns.problem()
    if why is not None:
        raise UserError(f"cannot run the benchmark here: {why}")
    boxes.resolve(load_config(Paths()), Paths(), "libvirt")  # a UserError saying how to get a box
    skipped = [s for s in shapes if not fits(s)]
    shapes = [s for s in shapes if s not in skipped]
    for s in skipped:
        print(f"shape {s}: skipped, does not fit this host's free memory")
    if not shapes:
        raise UserError("no shape fits this host's free memory", "free some memory, or pick smaller shapes")
    logs = ROOT / "build" / "logs" / "bench-libvirt"
    kvm = accel.resolve(accel_mode, Paths().cache).accel == "kvm"
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as home, \
            netns.libvirt_namespace(f"kiln-bench-{os.getpid()}", logs, kvm=kvm) as ns:
        env = {**os.environ, "VAGRANT_HOME": home, "VAGRANT_CHECKPOINT_DISABLE": "1"}
        # Add the box and upload it into libvirt's pool once, outside the timings.
        warm = subprocess.run(ns.argv([sys.executable, "-c", WARM_UP]), env=env, cwd=ROOT,
                              capture_output=True, text=True)
        if warm.returncode != 0:
            last = (warm.stderr.strip() or warm.stdout.strip() or "no output").splitlines()[-1]
            raise UserError(f"could not add the box and upload it into libvirt's pool: {last}")
        results = {s: bring_up(ns, env, s, accel_mode) for s in shapes}
        for volume in ns.virsh("vol-list", "default").stdout.split():
            if volume.startswith("kiln-VAGRANTSLASH-"):
                ns.virsh("vol-delete", "--pool", "default", volume)
    base = results.get("1", {})
    print(f"\n{os.cpu_count()} host CPUs, accel {accel_mode}")
    print(f"{'shape':<6} {'nodes':>5} {'up->ready s':>12} {'machines s':>11} {'services s':>11} "
          f"{'x shape 1':>10} {'host busy %':>12} {'VM CPU s':>9}")
    for shape, r in results.items():
        ratio = f"{r['wall'] / base['wall']:.2f}" if base else "-"
        print(f"{shape:<6} {parse_shape(shape).nodes:>5} {r['wall']:>12.1f} {r['machines']:>11.0f} "
              f"{r['services']:>11.0f} {ratio:>10} {r['host_busy_pct']:>12.0f} {r['vm_cpu_s']:>9.0f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
