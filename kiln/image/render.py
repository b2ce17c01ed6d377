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
from kiln.image import aptcache, layers, packer
from kiln.image import base as base_image
from kiln.image.hcl import hcl
from kiln.image.layers import env_name
from kiln.image.packer import PackerVersion
from kiln.output import warn
from kiln.paths import Paths

UPLOADED_DIRS = ("components", "provision", "kiln_node", "kiln_bridge")

INBUILD_KEY_ENV = "KILN_INBUILD_KEY"


@dataclass(frozen=True)
class RenderOptions:
    packer_version: PackerVersion
    git_revision: str
    accelerator: str  # "kvm" or "tcg": the default baked into the qemu template
    ssh_key: Path  # private key; its .pub goes into cloud-init seeds
    verify_extra: tuple[str, ...] = ()  # extra pytest args for in-build verification
    packages: tuple[BakedPackage, ...] = ()  # packages kiln built that the bake installs


@dataclass(frozen=True)
class BakedPackage:
    """A package kiln built (invoke package) that Packer uploads for a component's bake script."""

    component: str
    path: Path
    sha256: str
    origin: str  # what the package was made from, recorded in the image manifest

    @property
    def upload(self) -> str:
        """Where the bake finds it, relative to /tmp/kiln (KILN_SRC)."""
        return f"packages/{self.path.name}"


@dataclass(frozen=True)
class RenderedPair:
    pair: Pair
    directory: Path
    files: dict[str, str]

    @property
    def templates(self) -> list[Path]:
        """Each Packer template of the pair (a directory per layer for qemu), in build order."""
        found = [self.directory / rel for rel in self.files if rel.endswith(".pkr.hcl")]
        return sorted(found, key=lambda p: RENDER_ORDER.index(p.parent.name) if p.parent != self.directory
                      else -1)


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


def provision_env(config: Config, pair: Pair, components: Sequence[str], git_revision: str,
                  cat: catalog.Catalog, packages: Sequence[BakedPackage] = ()) -> str:
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
    if target.base:  # the hosts kiln's package cache serves (kiln.image.aptcache) to this build
        sources = base_image.apt_sources(target.codename, target.base["mirror"])
        values.append(("KILN_APT_PROXY_HOSTS", " ".join(sorted(aptcache.hosts_of(sources)))))
    for component, settings in config["components"].items():
        if component in ("enabled", "exclude") or not isinstance(settings, Mapping):
            continue
        for key, value in settings.items():
            if isinstance(value, Mapping):
                continue  # nested settings are the host's (e.g. how kiln builds a package)
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
    for package in packages:  # a package kiln built replaces whatever package_url says
        overrides = {"package_url": package.upload, "package_sha256": package.sha256,
                     "built_by": package.origin}
        values = [(k, v) for k, v in values if k not in {env_name(package.component, o) for o in overrides}]
        values += [(env_name(package.component, k), v) for k, v in overrides.items()]
    lines = ["# Rendered by kiln: the environment of the bake scripts for " + pair.name]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values]
    return "\n".join(lines) + "\n"


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


@dataclass(frozen=True)
class PackerRef:
    """A Packer template reference (`${build.Host}`) placed in a command as it is, unquoted."""

    text: str


def shell_local_command(words: Sequence[str | PackerRef]) -> str:
    """An HCL string literal of a command for Packer's shell-local provisioner: every literal word
    shell-quoted (a checkout path with spaces or quotes stays one word), then HCL-escaped; Packer's
    own references kept as references."""
    parts = [w.text if isinstance(w, PackerRef) else hcl(shlex.quote(w))[1:-1] for w in words]
    return '"' + " ".join(parts) + '"'


def _verify(options: RenderOptions, pair: Pair, components: Sequence[str], paths: Paths) -> dict[str, Any]:
    """The in-build verification's shell-local commands and environment, as HCL literals."""
    login: list[str | PackerRef] = [
        "--host", PackerRef("${build.Host}"), "--port", PackerRef("${build.Port}"),
        "--user", PackerRef("${build.User}")]
    # Packer logs in to an EC2 build instance with a temporary key pair of its own, which only
    # Packer knows: it hands the key over in the environment.
    ami = pair.builder.needs == "ami"
    key = ["--key-from-env", INBUILD_KEY_ENV] if ami else ["--key", str(options.ssh_key)]
    common = [*login, *key, "--name", pair.name, "--expect", ",".join(components)]
    program = [sys.executable, "-m", "kiln.image.inbuild"]
    environment = [hcl(f"KILN_ROOT={paths.root}")]
    if ami:
        environment.append(f'"{INBUILD_KEY_ENV}=${{build.SSHPrivateKey}}"')
    return {
        "connect": shell_local_command([*program, "connect", *common]),
        "verify": shell_local_command([*program, "verify", *common,
                                       *(f"--extra={e}" for e in options.verify_extra)]),
        "environment": ", ".join(environment),
    }


def _ami_tags(config: Config, pair: Pair) -> dict[str, str]:
    # The components the image is baked with, by name: the tags are written before the build, so
    # they cannot know the versions, and config's `version` settings are not what the image holds
    # (config once said ZooKeeper 3.8.4 where Debian installs 3.8.0). The exact versions are in the
    # image's /etc/kiln/manifest.json and the build's metadata.
    pinned = " ".join(config.components_for(pair.target.name))
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


# qemu: a template per layer, and one for a package layer (system packages added to a cached
# system layer, kiln.image.layers); AMIs: one template doing everything.
RENDER_LAYERS = {"disk": ("system", "packages", "payload"), "ami": ("all",)}
RENDER_ORDER = ("system", "packages", "payload")


def layer_context(name: str, config: Config, cat: catalog.Catalog,
                  components: Sequence[str]) -> dict[str, Any]:
    """What one Packer template of a pair does: its steps, and whether it verifies and records."""
    parts = layers.steps(cat, components)
    chosen = (*parts["system"], *parts["payload"]) if name == "all" else parts[name]
    last = name in ("payload", "all")
    return {"name": name, "steps": [{"script": s.script, "title": s.title} for s in chosen],
            "verify": last and bool(config["build"]["verify"]), "manifest": last}


def _variables(config: Config, pair: Pair, paths: Paths, options: RenderOptions, layer: str,
               cloud_init: bool) -> list[dict[str, Any]]:
    """The Packer variables of a template, with config.json's values as defaults."""
    build = config["build"]
    staging = paths.artifacts / f".{pair.name}.partial"
    variables = [
        ("output_directory", "string", "Where the builder writes its disk (kiln passes a staging directory).",
         str(staging / "output")),
        ("artifact_directory", "string", "Where kiln's records land; outside output_directory.",
         str(staging)),
        ("git_revision", "string", "The checkout's revision, recorded with the build.", options.git_revision),
        ("apt_proxy", "string", "kiln's package cache as the build machine reaches it (empty: none).", ""),
    ]
    if pair.builder.name == "qemu":
        source = _source(pair, paths) if layer == "system" else {
            "url": str(paths.rendered_packer / pair.name / "parent.qcow2"), "checksum": "none",
            "checksum_note": "an overlay on the system layer, made by kiln at build time"}
        variables += [
            ("vm_name", "string", "File name of the layer's disk.", "disk.qcow2"),
            ("source_image", "string",
             f"The image this layer starts from ({source['checksum_note'] or 'a download'}).", source["url"]),
            ("source_checksum", "string", "sha256:<hex> of source_image, or none for kiln's own disks.",
             source["checksum"]),
            ("accelerator", "string", "kvm where KVM really runs guests, tcg otherwise (kiln probes).",
             options.accelerator),
            ("cpus", "number", "build.cpus", build["cpus"]),
            ("memory_mb", "number", "build.memory_mb", build["memory_mb"]),
            ("disk_size", "string", "build.disk_size_mb (without it a disk image keeps its own size)",
             f"{build['disk_size_mb']}M"),
            ("headless", "bool", "build.headless", bool(build["headless"])),
            # Forward SSH on loopback only (Packer's default listens on every interface). The
            # {{ .SSHHostPort }} inside is Packer's own template, filled in when QEMU starts.
            ("qemuargs", "list(list(string))", "Extra QEMU arguments: networking, serial log.", [
                ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
                ["-device", "virtio-net,netdev=user.0"],
                ["-serial", f"file:{paths.logs / f'{pair.name}-{layer}.serial.log'}"],
            ]),
            ("ssh_username", "string", "The build user of the source image.", pair.target.ssh_username),
            ("ssh_private_key_file", "string", "kiln's build key.", str(options.ssh_key)),
            ("ssh_timeout", "string", "build.ssh_timeout", build["ssh_timeout"]),
        ]
        if cloud_init:
            pair_dir = paths.rendered_packer / pair.name
            seed = [str(pair_dir / "cidata/user-data"), str(pair_dir / "cidata/meta-data")]
            variables.append(("cloud_init_files", "list(string)", "cloud-init seed for Packer's login", seed))
    if pair.builder.name == "amazon-ebs":
        variables.append(("region", "string", "aws.region", config["aws"]["region"]))
    return [{"name": n, "type": t, "description": d, "default": v} for n, t, d, v in variables]


# The bound of one bake step inside Packer (a component's bake.sh, packages.sh): Packer stops a
# step that hangs and fails the layer, naming the step; the whole Packer run has its own bound.
STEP_TIMEOUT = "2h"


def render_pair(config: Config, pair: Pair, paths: Paths, options: RenderOptions) -> RenderedPair:
    """The pair's Packer templates, one per layer (qemu: system and payload; AMIs: one), with
    kiln.env and catalog.json. A virtualbox pair has none: its box is made from the qemu image."""
    pair_dir = paths.rendered_packer / pair.name
    pv = options.packer_version
    components = config.components_for(pair.target.name)
    cat = catalog.load_cached(paths.root)
    public_key = Path(f"{options.ssh_key}.pub").read_text(encoding="utf-8").strip()
    cloud_init = pair.target.image is not None and pair.builder.needs == "disk"
    files = {
        "kiln.env": provision_env(config, pair, components, options.git_revision, cat, options.packages),
        # The catalog the node configurator reads; provision/manifest.sh installs it.
        "catalog.json": json.dumps(cat.node_catalog(config.data), indent=2, sort_keys=True) + "\n",
    }
    if pair.builder.name == "virtualbox":
        return RenderedPair(pair=pair, directory=pair_dir, files=files)
    base: dict[str, Any] = {
        "kiln": {"version": __version__, "git_revision": options.git_revision},
        "project": config["project"],
        "pair": pair.name,
        "source_name": pair.name.replace(".", "-"),
        "target": pair.target,
        "builder": pair.builder,
        "aws": config["aws"],
        "components": components,
        "cloud_init": cloud_init,
        "packer": {
            "version": str(pv),
            "required_plugins": pv.has_plugins,
            "metadata_options": pv.has_plugins,
            "plugins": pv.plugins_for(pair.builder.packer_source),
        },
        "uploads": [
            *({"source": str(paths.root / d), "destination": "/tmp/kiln/"} for d in UPLOADED_DIRS),
            {"source": str(pair_dir / "kiln.env"), "destination": "/tmp/kiln/kiln.env"},
            {"source": str(pair_dir / "catalog.json"), "destination": "/tmp/kiln/catalog.json"},
            *({"source": str(p.path), "destination": f"/tmp/kiln/{p.upload}"} for p in options.packages),
        ],
        "verify": _verify(options, pair, components, paths),
        "step_timeout": STEP_TIMEOUT,
        "ami_tags": _ami_tags(config, pair),
    }
    template = _environment(paths).get_template("kiln.pkr.hcl.j2")
    names = RENDER_LAYERS[pair.builder.needs]
    for name in names:
        context = {**base, "layer": layer_context(name, config, cat, components),
                   "variables": _variables(config, pair, paths, options, name, cloud_init)}
        where = "kiln.pkr.hcl" if len(names) == 1 else f"{name}/kiln.pkr.hcl"
        files[where] = template.render(context)
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
