"""Find Packer, learn its version, and run `init` / `validate` on rendered templates.

Packer 1.7 moved builders into plugins: from 1.7 on kiln renders a `required_plugins`
block and runs `packer init`; Debian's 1.6.6 has the builders compiled in and knows
neither (nor amazon-ebs's metadata_options / imds_support).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

from kiln.errors import UserError
from kiln.runner import Result, capture, run, which

INSTALL_HINT = "apt-get install packer (Debian/Ubuntu), or a release from HashiCorp"

PLUGINS: dict[str, dict[str, dict[str, str]]] = {
    "qemu": {
        "qemu": {"version": ">= 1.1.0", "source": "github.com/hashicorp/qemu"},
        "vagrant": {"version": ">= 1.1.0", "source": "github.com/hashicorp/vagrant"},
    },
    "virtualbox-ovf": {
        "virtualbox": {"version": ">= 1.0.5", "source": "github.com/hashicorp/virtualbox"},
        "vagrant": {"version": ">= 1.1.0", "source": "github.com/hashicorp/vagrant"},
    },
    # imds_support needs plugin 1.2.0
    "amazon-ebs": {
        "amazon": {"version": ">= 1.2.0", "source": "github.com/hashicorp/amazon"},
    },
}


@total_ordering
@dataclass(frozen=True)
class PackerVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> PackerVersion:
        m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
        if not m:
            raise ValueError(f"no Packer version in {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PackerVersion):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    @property
    def has_plugins(self) -> bool:
        """Packer >= 1.7: external plugins, `packer init`, `required_plugins`."""
        return self >= PackerVersion(1, 7, 0)

    def plugins_for(self, source_type: str) -> dict[str, dict[str, str]]:
        return PLUGINS[source_type] if self.has_plugins else {}


# What kiln renders for when no Packer is installed (render still works; validate won't).
ASSUMED_VERSION = PackerVersion(1, 11, 2)


def find_packer() -> str:
    return which("packer", INSTALL_HINT)


def installed_version(packer: str | None = None) -> PackerVersion | None:
    exe = packer or _maybe_packer()
    if exe is None:
        return None
    out = capture([exe, "version"])
    if not out:
        return None
    try:
        return PackerVersion.parse(out)
    except ValueError:
        return None


def _maybe_packer() -> str | None:
    try:
        return find_packer()
    except UserError:
        return None


INIT_TIMEOUT = 600.0  # plugin downloads; a stalled download ends here, naming the step and its log


def init(template_dir: Path, *, log: Path | None = None, quiet: bool = True,
         timeout: float = INIT_TIMEOUT) -> Result:
    return run([find_packer(), "init", "."], step=f"packer init ({template_dir})", cwd=template_dir, log=log,
               quiet=quiet, env=_env(), timeout=timeout)


def validate(
    template_dir: Path,
    *,
    variables: dict[str, str] | None = None,
    log: Path | None = None,
) -> Result:
    """`packer validate` in the pair directory; never raises on a failing template."""
    argv = [find_packer(), "validate"]
    for key, value in sorted((variables or {}).items()):
        argv += ["-var", f"{key}={value}"]
    argv.append(".")
    return run(argv, step="packer validate", cwd=template_dir, log=log, quiet=True,
               check=False, env=_env(), timeout=120)


def _env() -> dict[str, str]:
    # No phoning home from builds or tests.
    return {"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}
