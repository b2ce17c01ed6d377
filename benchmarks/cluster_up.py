"""Benchmark: time from `invoke up --shape S` to a ready cluster, for shapes 1, 3m and 3m2a.

    .venv/bin/python benchmarks/cluster_up.py [--shapes 1,3m,3m2a] [--accel auto|kvm|tcg]

Each shape is brought up from nothing (the box already added once, outside the timing),
timed until `invoke up` reports READY, then destroyed. On a machine that must not expose
VM networks (a CI host), everything runs inside a network namespace with its own libvirtd
(kiln.netns), as the VM tests do. Prints seconds per shape and the ratio to shape 1; the aim
is a 3-node cluster ready in well under 3x the one-node time (machines boot in parallel).
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

from kiln import capacity, netns  # noqa: E402
from kiln.config import load_config  # noqa: E402
from kiln.paths import Paths  # noqa: E402
from kiln.shapes import parse_shape  # noqa: E402

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]


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
    started = time.monotonic()
    up = subprocess.run(ns.argv([*INVOKE, "up", "--shape", shape, "--name", name, "--accel", accel,
                                 "--quiet"]), env=env, cwd=ROOT, capture_output=True, text=True)
    took = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise SystemExit(f"invoke up --shape {shape} failed:\n{up.stdout[-3000:]}{up.stderr[-2000:]}")
        found = re.search(r"READY in (\d+)s \(machines (\d+)s, services (\d+)s\)", up.stdout)
        parts = [float(g) for g in found.groups()] if found else [took, 0.0, 0.0]
        return {"wall": round(took, 1), "machines": parts[1], "services": parts[2]}
    finally:
        subprocess.run(ns.argv([*INVOKE, "down", "--destroy", "--cluster", name]), env=env, cwd=ROOT,
                       capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="1,3m,3m2a")
    parser.add_argument("--accel", default="auto")
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    skipped = [s for s in shapes if not fits(s)]
    shapes = [s for s in shapes if s not in skipped]
    for s in skipped:
        print(f"shape {s}: skipped, does not fit this host's free memory")
    logs = ROOT / "build" / "logs" / "bench-libvirt"
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as home, \
            netns.libvirt_namespace(f"kiln-bench-{os.getpid()}", logs) as ns:
        env = {**os.environ, "VAGRANT_HOME": home, "VAGRANT_CHECKPOINT_DISABLE": "1"}
        # Add the box (and upload it to libvirt) once, outside the timings.
        bring_up(ns, env, "1", args.accel)
        results = {s: bring_up(ns, env, s, args.accel) for s in shapes}
        for volume in ns.virsh("vol-list", "default").stdout.split():
            if volume.startswith("kiln-VAGRANTSLASH-"):
                ns.virsh("vol-delete", "--pool", "default", volume)
    base = results.get("1", {}).get("wall")
    print(f"\n{'shape':<6} {'nodes':>5} {'up->ready s':>12} {'machines s':>11} {'services s':>11} "
          f"{'x shape 1':>10}")
    for shape, r in results.items():
        ratio = f"{r['wall'] / base:.2f}" if base else "-"
        print(f"{shape:<6} {parse_shape(shape).nodes:>5} {r['wall']:>12.1f} {r['machines']:>11.0f} "
              f"{r['services']:>11.0f} {ratio:>10}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
