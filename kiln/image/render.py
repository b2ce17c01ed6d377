"""Render Packer templates (Jinja2, StrictUndefined) into build/packer/<target>-<builder>/.

Output is deterministic: the same config, Packer version, git revision, accelerator and
key give byte-identical files. Every pair is rendered in memory first; files are then
written into a temp directory and swapped in, so a failure leaves build/ as it was.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from kiln import __version__
from kiln.config import catalog
from kiln.config.load import Config
from kiln.config.targets import Pair
from kiln.gitinfo import git_revision
from kiln.image import packer
from kiln.image.hcl import hcl
from kiln.image.packer import PackerVersion
from kiln.output import warn
from kiln.paths import Paths

ALWAYS_LAST = ("manifest", "cleanup")
UPLOADED_DIRS = ("components", "provision", "kiln_node", "kiln_bridge")

INBUILD_KEY_ENV = "KILN_INBUILD_KEY"


@dataclass(frozen=True)
class RenderOptions:
    packer_version: PackerVersion
    git_revision: str
    accelerator: str  # "kvm" or "tcg": the default baked into the qemu template
    ssh_key: Path  # private key; its .pub goes into cloud-init seeds
    verify_extra: tuple[str, ...] = ()  # extra pytest args for in-build verification


@dataclass(frozen=True)
class RenderedPair:
    pair: Pair
    directory: Path
    files: dict[str, str]

    @property
    def template(self) -> Path:
        return self.directory / "kiln.pkr.hcl"


def _environment(paths: Paths) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.packer_templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["hcl"] = hcl
    return env


def env_name(component: str, key: str) -> str:
    return f"KILN_{component}_{key}".upper().replace("-", "_")


def provision_env(config: Config, pair: Pair, components: Sequence[str], git_revision: str,
                  cat: catalog.Catalog) -> str:
    """The kiln.env file the bake scripts source (shell-quoted, config order): the target, every
    component setting as KILN_<NAME>_<KEY>, and from the catalog each component's packages for
    the target's family (KILN_<NAME>_PACKAGES) and ports (KILN_<NAME>_PORT_<PORT>)."""
    target = pair.target
    values: list[tuple[str, str]] = [
        ("KILN_VERSION", __version__),
        ("KILN_PROJECT", config["project"]["name"]),
        ("KILN_TARGET", target.name),
        ("KILN_DISTRO", target.distro),
        ("KILN_RELEASE", target.release),
        ("KILN_CODENAME", target.codename),
        ("KILN_FAMILY", target.family),
        ("KILN_BUILDER", pair.builder.name),
        ("KILN_COMPONENTS", " ".join(components)),
        ("KILN_GIT_REVISION", git_revision),
        ("KILN_ZERO_FILL", "true" if config["build"]["zero_fill"] else "false"),
    ]
    for component, settings in config["components"].items():
        if component in ("enabled", "exclude") or not isinstance(settings, Mapping):
            continue
        for key, value in settings.items():
            if isinstance(value, list):
                text = " ".join(str(v) for v in value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            values.append((env_name(component, key), text))
    for name in cat.names():
        comp = cat[name]
        if comp.facts.get("packages"):
            values.append((env_name(name, "packages"), " ".join(comp.packages(target.family))))
        for port in comp.ports:
            values.append((env_name(name, f"port_{port}"), str(cat.port(name, port, config.data))))
    lines = ["# Rendered by kiln: the environment of the bake scripts for " + pair.name]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values]
    return "\n".join(lines) + "\n"


def build_steps(config: Config, cat: catalog.Catalog) -> list[dict[str, str]]:
    """Each component's bake.sh, every one after those it depends on, then the image-wide steps."""
    components = cat.bake_order(config.components_for(""))
    steps = [{"script": f"components/{c}/bake.sh", "title": f"component: {c}"} for c in components]
    steps += [{"script": f"provision/{c}.sh", "title": f"always: {c}"} for c in ALWAYS_LAST]
    return steps


def _source(pair: Pair, paths: Paths) -> dict[str, str]:
    target = pair.target
    if target.image is not None:
        sha = target.image["sha256"]
        return {
            "url": target.image["url"],
            "checksum": f"sha256:{sha}" if sha else f"file:{target.image['checksum_url']}",
            "checksum_note": "" if sha else "not pinned yet: run `invoke pin` on a connected machine",
        }
    assert target.base is not None
    base = Path(target.base["path"])
    return {
        "url": str(base if base.is_absolute() else paths.root / base),
        "checksum": "none",
        "checksum_note": "built locally by `invoke base`; kiln checks its fingerprint",
    }


def _ami_tags(config: Config, pair: Pair) -> dict[str, str]:
    pinned = " ".join(
        f"{name}={config['components'][name]['version']}"
        for name in config.components_for(pair.target.name)
        if isinstance(config["components"].get(name), Mapping)
        and "version" in config["components"][name]
    )
    tags = {
        "Name": hcl(f"{config['project']['name']}-{pair.target.name}-{config['project']['version']}"),
        "kiln:version": hcl(config["project"]["version"]),
        "kiln:target": hcl(pair.target.name),
        "kiln:components": hcl(pinned),
        "kiln:git-revision": "var.git_revision",
        "kiln:build-time": "local.build_time",
        "kiln:source-ami": hcl("{{ .SourceAMI }}"),
    }
    for key, value in sorted(config["aws"]["tags"].items()):
        tags.setdefault(key, hcl(value))
    return tags


def _cloud_init(config: Config, pair: Pair, public_key: str) -> dict[str, str]:
    user = pair.target.ssh_username
    user_data = (
        "#cloud-config\n"
        "# Rendered by kiln: lets Packer log in to the cloud image with kiln's build key.\n"
        "ssh_pwauth: false\n"
        "users:\n"
        f"  - name: {user}\n"
        "    sudo: ALL=(ALL) NOPASSWD:ALL\n"
        "    shell: /bin/bash\n"
        "    lock_passwd: true\n"
        "    ssh_authorized_keys:\n"
        f"      - {public_key}\n"
    )
    meta_data = f"instance-id: kiln-{pair.name}\nlocal-hostname: kiln\n"
    return {"cidata/user-data": user_data, "cidata/meta-data": meta_data}


def _box_vagrantfile(pair: Pair) -> str:
    return (
        "# Embedded in the kiln box: defaults every Vagrantfile using this box inherits.\n"
        'Vagrant.configure("2") do |config|\n'
        f'  config.ssh.username = "{pair.target.ssh_username}"\n'
        '  config.vm.synced_folder ".", "/vagrant", disabled: true\n'
        "end\n"
    )


def render_pair(config: Config, pair: Pair, paths: Paths, options: RenderOptions) -> RenderedPair:
    pair_dir = paths.rendered_packer / pair.name
    artifacts = paths.artifacts / pair.name
    pv = options.packer_version
    components = config.components_for(pair.target.name)
    cat = catalog.load_cached(paths.root)
    public_key = Path(f"{options.ssh_key}.pub").read_text(encoding="utf-8").strip()
    cloud_init = pair.target.image is not None and pair.builder.needs == "disk"
    context: dict[str, Any] = {
        "kiln": {"version": __version__, "git_revision": options.git_revision},
        "project": config["project"],
        "pair": pair.name,
        "source_name": pair.name.replace(".", "-"),
        "target": pair.target,
        "builder": pair.builder,
        "build": config["build"],
        "aws": config["aws"],
        "components": components,
        "accelerator": options.accelerator,
        "cloud_init": cloud_init,
        "packer": {
            "version": str(pv),
            "required_plugins": pv.has_plugins,
            "metadata_options": pv.has_plugins,
            "plugins": pv.plugins_for(pair.builder.packer_source),
        },
        "paths": {
            "pair_dir": str(pair_dir),
            "output_directory": str(paths.artifacts / f".{pair.name}.partial" / "output"),
            "artifact_directory": str(paths.artifacts / f".{pair.name}.partial"),
            "final_artifact_directory": str(artifacts),
            "serial_log": str(paths.logs / f"{pair.name}.serial.log"),
            "ssh_key": str(options.ssh_key),
            "source_ovf": str(paths.build / "images" / pair.target.name / f"{pair.target.name}.ovf"),
        },
        "uploads": [
            *({"source": str(paths.root / d), "destination": "/tmp/kiln/"} for d in UPLOADED_DIRS),
            {"source": str(pair_dir / "kiln.env"), "destination": "/tmp/kiln/kiln.env"},
            {"source": str(pair_dir / "catalog.json"), "destination": "/tmp/kiln/catalog.json"},
        ],
        "steps": build_steps(config, cat),
        "verify": {
            "enabled": bool(config["build"]["verify"]),
            "python": sys.executable,
            "root": str(paths.root),
            "extra": list(options.verify_extra),
            # Packer logs in to an EC2 build instance with a temporary key pair of its own,
            # which only Packer knows: it hands the key over in the environment.
            "key_env": INBUILD_KEY_ENV if pair.builder.needs == "ami" else "",
            "args": ("--host ${build.Host} --port ${build.Port} --user ${build.User} "
                     + (f"--key-from-env {INBUILD_KEY_ENV}" if pair.builder.needs == "ami"
                        else f"--key {options.ssh_key}") + f" --name {pair.name}"
                     + f" --expect {','.join(components)}"),
        },
        "ami_tags": _ami_tags(config, pair),
    }
    if pair.builder.needs == "disk":
        context["source"] = _source(pair, paths)
    template = _environment(paths).get_template("kiln.pkr.hcl.j2")
    files = {
        "kiln.pkr.hcl": template.render(context),
        "kiln.env": provision_env(config, pair, components, options.git_revision, cat),
        # The catalog the node configurator reads; provision/manifest.sh installs it.
        "catalog.json": json.dumps(cat.node_catalog(config.data), indent=2, sort_keys=True) + "\n",
    }
    if cloud_init:
        files.update(_cloud_init(config, pair, public_key))
    if pair.builder.vagrant_provider:
        files["box.Vagrantfile"] = _box_vagrantfile(pair)
    return RenderedPair(pair=pair, directory=pair_dir, files=files)


def write_pairs(rendered: Sequence[RenderedPair], paths: Paths) -> None:
    """Write each pair's files into a temp dir, then swap it in (old dir removed after)."""
    paths.rendered_packer.mkdir(parents=True, exist_ok=True)
    for item in rendered:
        staging = Path(tempfile.mkdtemp(prefix=f".{item.pair.name}.", dir=paths.rendered_packer))
        try:
            for rel, text in sorted(item.files.items()):
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text, encoding="utf-8")
            os.chmod(staging, 0o755)
            old = None
            if item.directory.exists():
                old = item.directory.with_name(f".{item.pair.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                item.directory.rename(old)
            staging.rename(item.directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def render_all(
    config: Config, pairs: Sequence[Pair], paths: Paths, options: RenderOptions
) -> list[RenderedPair]:
    rendered = [render_pair(config, pair, paths, options) for pair in pairs]
    write_pairs(rendered, paths)
    return rendered


def render_options(config: Config, paths: Paths) -> RenderOptions:
    """Packer version, git revision, the default accelerator and the build key for rendering."""
    from kiln.keys import ensure_build_key

    version = packer.installed_version()
    if version is None:
        warn(f"packer not found: rendering for Packer {packer.ASSUMED_VERSION} syntax")
        version = packer.ASSUMED_VERSION
    requested = config["build"]["accelerator"]
    # Rendering never boots a VM: 'auto' bakes in the safe default; `invoke build` passes
    # the probed accelerator with -var.
    accel = requested if requested in ("kvm", "tcg") else "tcg"
    return RenderOptions(
        packer_version=version,
        git_revision=git_revision(paths.root),
        accelerator=accel,
        ssh_key=ensure_build_key(paths.build),
    )
