"""Hostile config input, everywhere it enters `invoke`: config files (--config, --profile), --set.

Each case runs `invoke render` as a user types it, on a copy of the tree, and must end with exit
code 2 and one short message (on stderr) that names the input and says what to give instead, with
no traceback and no file written or changed anywhere in the tree (render writes build/ when it
gets that far). Table-driven: add a row for a new class of bad input.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_support import assert_refused, invoke, snapshot

from kiln.config import catalog
from kiln.config.load import MAX_DEPTH, MAX_FILE_BYTES, load_config, semantic_problems
from kiln.errors import ConfigError
from kiln.paths import REPO_ROOT, Paths

# -- the table ------------------------------------------------------------------------------------

Maker = Callable[[Path], list[str]]  # writes its input under the given dir, returns invoke's args


def overlay_file(name: str, content: bytes) -> Maker:
    def make(inputs: Path) -> list[str]:
        path = inputs / name
        path.write_bytes(content)
        return ["--config", str(path)]

    return make


def overlay(data: Any) -> Maker:
    return overlay_file("overlay.json", json.dumps(data).encode())


def fifo(inputs: Path) -> list[str]:
    path = inputs / "fifo.json"
    os.mkfifo(path)  # nobody writes: a reader that opens it blocking would hang
    return ["--config", str(path)]


def directory(inputs: Path) -> list[str]:
    (inputs / "dir.json").mkdir()
    return ["--config", str(inputs / "dir.json")]


def huge(inputs: Path) -> list[str]:
    path = inputs / "huge.json"
    with path.open("wb") as fh:
        fh.write(b"{" + b" " * (MAX_FILE_BYTES + 10) + b"}")
    return ["--config", str(path)]


def sets(*exprs: str) -> Maker:
    return lambda inputs: [arg for e in exprs for arg in ("--set", e)]


def args(*given: str) -> Maker:
    return lambda inputs: list(given)


def target_copy(name: str) -> Maker:
    """An overlay adding debian-12's entry under another name."""

    def make(inputs: Path) -> list[str]:
        config = json.loads((inputs.parent / "config.json").read_text(encoding="utf-8"))
        entry = config["targets"]["debian-12"]
        return overlay({"targets": {name: entry}})(inputs)

    return make


def nested(depth: int) -> bytes:
    return b'{"trial": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


@dataclass(frozen=True)
class Case:
    id: str
    make: Maker
    phrases: tuple[str, ...]  # the input named, and what to give instead


DIGITS_400 = "1" + "0" * 399
DIGITS_5000 = "1" + "0" * 4999

CASES = [
    # files that are not JSON kiln reads
    Case("not-utf8", overlay_file("latin1.json", b'{"trial": {"vm_name": "caf\xe9"}}'),
         ("latin1.json: not UTF-8 text (byte 0xe9 at offset 26)", "save it as UTF-8")),
    Case("utf16-bom", overlay_file("utf16.json", '{"trial": {}}'.encode("utf-16")),
         ("utf16.json: not UTF-8 text", "save it as UTF-8")),
    Case("directory", directory,
         ("dir.json: cannot read: a directory, not a regular file", "pass a JSON file")),
    Case("fifo", fifo, ("fifo.json: cannot read: a FIFO, not a regular file", "pass a JSON file")),
    Case("device", args("--config", "/dev/zero"),
         ("/dev/zero: cannot read: a character device, not a regular file", "pass a JSON file")),
    Case("huge-file", huge,
         (f"huge.json: larger than {MAX_FILE_BYTES} bytes", "too large for a config file")),
    Case("empty-file", overlay_file("empty.json", b""), ("empty.json:1:1: invalid JSON", "fix it there")),
    Case("invalid-json", overlay_file("bad.json", b'{"trial": '),
         ("bad.json:1:11: invalid JSON", "fix it there")),
    Case("missing-file", args("--config", "/nonexistent/kiln.json"),
         ("/nonexistent/kiln.json: file not found", "check the path")),
    Case("top-level-array", overlay([1, 2]), ("overlay.json: expected a JSON object at the top, got array",)),
    Case("nested-100000", overlay_file("deep.json", b"[" * 100_000 + b"]" * 100_000),
         ("deep.json: nested more than 32 levels deep", "a config file nests 5")),
    Case("nested-40", overlay_file("deep.json", nested(40)), ("deep.json: nested more than 32 levels deep",)),
    Case("nan", overlay_file("nan.json", b'{"trial": {"cpus": NaN}}'),
         ("nan.json: NaN is not a JSON number", "give a finite number")),
    Case("infinity", overlay_file("inf.json", b'{"build": {"cpus": Infinity}}'),
         ("inf.json: Infinity is not a JSON number", "give a finite number")),
    Case("minus-infinity", overlay_file("inf.json", b'{"build": {"cpus": -Infinity}}'),
         ("inf.json: -Infinity is not a JSON number",)),
    Case("float-overflow", overlay_file("big.json", b'{"build": {"cpus": 1e400}}'),
         ("big.json: the number 1e400 is beyond a float's range", "give a finite number")),
    Case("400-digits", overlay_file("big.json", f'{{"build": {{"cpus": {DIGITS_400}}}}}'.encode()),
         ("big.json: the number 100000000000... has 400 characters", "give one of at most 20")),
    Case("5000-digits", overlay_file("big.json", f'{{"build": {{"cpus": {DIGITS_5000}}}}}'.encode()),
         ("big.json: the number 100000000000... has 5000 characters",)),
    Case("duplicate-key", overlay_file("dup.json", b'{"trial": {"cpus": 2, "cpus": 4}}'),
         ('dup.json: the key "cpus" appears twice in one object', "keep one")),
    Case("lone-surrogate", overlay_file("sur.json", b'{"trial": {"vm_name": "\\ud800"}}'),
         ("sur.json: trial/vm_name is not text (it holds a lone surrogate such as \\ud800)",
          "give real text")),
    # sections and values of the wrong type: the schema speaks first, cross-field checks never crash
    Case("set-build-5", sets("build=5"), ("$.build: expected object, got integer 5",)),
    Case("set-shapes-[5]", sets("cluster.shapes=[5]"),
         ("$.cluster.shapes[0]: expected string, got integer 5",)),
    Case("set-first-host-abc", sets('cluster.first_host="abc"'),
         ('$.cluster.first_host: expected integer, got string "abc"',)),
    Case("set-shapes-string", sets('cluster.shapes="3m"'),
         ('$.cluster.shapes: expected array, got string "3m"',)),
    Case("set-trial-list", sets("trial=[]"), ("$.trial: expected object, got array []",)),
    Case("set-targets-5", sets("targets=5"), ("$.targets: expected object, got integer 5",)),
    Case("set-enabled-7", sets("components.enabled=7"),
         ("$.components.enabled: expected array, got integer 7",)),
    Case("set-mesos-null", sets("components.mesos=null"), ("$.components.mesos: expected object, got null",)),
    Case("set-build-targets-[1]", sets("build.targets=[1]"),
         ("$.build.targets[0]: expected string, got integer 1",)),
    Case("overlay-build-5", overlay({"build": 5}), ("$.build: expected object, got integer 5",)),
    Case("overlay-cluster-list", overlay({"cluster": ["3m"]}),
         ('$.cluster: expected object, got array ["3m"]',)),
    Case("overlay-schema-5", overlay({"$schema": 5}), ("$.$schema: expected string, got integer 5",)),
    Case("overlay-schema-newline", overlay({"$schema": "../config.schema.json\n"}),
         ("$.$schema: expected text on one line: no newline",)),
    # numbers through --set
    Case("set-nan", sets("trial.cpus=NaN"), ("--set 'trial.cpus=NaN': NaN is not a JSON number",
                                            "quote a string value as JSON")),
    Case("set-1e400", sets("trial.cpus=1e400"), ("--set 'trial.cpus=1e400': the number 1e400 is beyond",)),
    Case("set-5000-digits", sets(f"trial.cpus={DIGITS_5000}"),
         ("has 5000 characters; give one of at most 20",)),
    Case("set-nested", sets("trial.cpus=" + "[" * 50 + "]" * 50), ("nested more than 32 levels deep",)),
    Case("set-long-key", sets(".".join(["a"] * (MAX_DEPTH + 5)) + "=1"),
         (f"a key path of more than {MAX_DEPTH} parts",)),
    Case("set-no-equals", sets("trial.cpus"), ("--set 'trial.cpus': expected KEY.PATH=VALUE",)),
    Case("set-empty-key", sets("=5"), ("--set '=5': empty key segment",)),
    Case("set-nofile-huge", sets("components.base.nofile_limit=99999999999999999999"),
         ("$.components.base.nofile_limit: expected maximum 1048576",)),
    # names and addresses with a trailing newline or another control character
    Case("cluster-name-newline", sets('cluster.name="kiln\\n"'),
         ('$.cluster.name: expected a string matching',
                                                                  '"kiln\\n"')),
    Case("vm-name-tab", sets('trial.vm_name="me\\tsos"'), ("$.trial.vm_name: expected a string matching",)),
    Case("project-name-newline", overlay({"project": {"name": "kiln\n"}}), ("$.project.name: expected",)),
    Case("box-name-newline", sets('trial.box_name="kiln/box\\n"'), ("$.trial.box_name: expected",)),
    Case("ip-newline", sets('trial.ip_address="10.141.141.10\\n"'),
         ("$.trial.ip_address: expected an ipv4",)),
    Case("prefix-newline", sets('cluster.network_prefix="10.141.141\\n"'),
         ("$.cluster.network_prefix: expected",)),
    Case("shape-newline", sets('cluster.default_shape="3m\\n"'), ("$.cluster.default_shape: expected '1'",)),
    Case("shapes-item-newline", sets('cluster.shapes=["1", "3m\\n"]'),
         ("$.cluster.shapes[1]: expected '1'",)),
    Case("shapes-item-carriage-return", sets('cluster.shapes=["3m2a\\r"]'),
         ("$.cluster.shapes[0]: expected",)),
    Case("region-newline", sets('aws.region="us-east-1\\n"'), ("$.aws.region: expected",)),
    Case("target-key-newline", target_copy("debian-13\n"),
         ("$.targets: expected a target name: a distro, '-' and its version, like debian-12, "
          'got "debian-13\\n"',)),
    Case("ssh-user-newline", sets('targets.debian-12.ssh_username="debian\\n"'),
         ("$.targets.debian-12.ssh_username: expected",)),
    Case("url-newline", sets('components.marathon.url="https://example.org/m.tgz\\nx"'),
         ("$.components.marathon.url: expected",)),
    Case("tag-value-newline", sets('aws.tags={"team": "a\\nb"}'),
         ("$.aws.tags.team: expected an AWS tag value",)),
    Case("tag-key-escape", sets('aws.tags={"\\u001b[31m": "x"}'),
         ('$.aws.tags: expected an AWS tag key: 1-128 characters, no control character, got "\\u001b[31m"',)),
    Case("release-newline", sets('targets.debian-12.release="12\\n"'),
         ("$.targets.debian-12.release: expected text",)),
    Case("exclude-reason-newline", sets('components.exclude={"marathon": "why\\nnot"}'),
         ("$.components.exclude.marathon: expected text on one line",)),
    Case("docker-timeout-newline", sets('components.docker.executor_registration_timeout="5mins\\n"'),
         ("$.components.docker.executor_registration_timeout: expected",)),
    Case("bridge-newline", sets('components.qemu-kvm.bridge="br0\\n"'),
         ("$.components.qemu-kvm.bridge: expected",)),
    Case("apt-repo-second-line", sets('components.mesos.apt_repo="deb http://a.example main\\ndeb http://b"'),
         ("$.components.mesos.apt_repo: expected",)),
    Case("key-with-newline-unknown", overlay({"trial": {"x\ny": 1}}),
         ('$.trial["x\\ny"]: unknown key',)),
    # --profile names a file in profiles/, nothing else
    Case("profile-dotdot", args("--profile", "../profiles/offline"),
         ('--profile "../profiles/offline": expected the name of a file in profiles/', "use --config FILE")),
    Case("profile-absolute", args("--profile", "/etc/passwd"),
         ('--profile "/etc/passwd": expected the name',)),
    Case("profile-subdir", args("--profile", "profiles/offline.json"),
         ('--profile "profiles/offline.json"',)),
    Case("profile-unknown", args("--profile", "nosuch"),
         ("--profile nosuch: no such profile (known: offline)",)),
    Case("profile-dot", args("--profile", "."), ('--profile ".": expected the name of a file in profiles/',)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_config_input_is_refused_with_one_message_and_nothing_written(tree: Paths,
                                                                              case: Case) -> None:
    inputs = tree.root / "inputs"
    inputs.mkdir()
    argv = case.make(inputs)
    before = snapshot(tree.root)
    result = invoke(tree, "render", *argv, timeout=60)
    assert_refused(result, case.phrases)
    assert snapshot(tree.root) == before, "a refused input wrote or changed files"


def test_the_table_holds_enough_cases() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def test_a_flood_of_problems_prints_a_bounded_summary(tree: Paths) -> None:
    path = tree.root / "flood.json"
    flood = {"trial": {f"unknown_key_{i:05d}": i for i in range(20_000)}}
    path.write_text(json.dumps(flood), encoding="utf-8")
    before = snapshot(tree.root)
    result = invoke(tree, "render", "--config", str(path), timeout=60)
    assert_refused(result, ("configuration: 20000 problems, the first 20 of them:", "... and 19980 more",
                            "$.trial.unknown_key_00000: unknown key (allowed: box_name"), max_lines=23)
    assert len(result.stderr) < 10_000
    assert snapshot(tree.root) == before


def test_a_symlink_in_profiles_leading_out_is_refused(tree: Paths,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.json"
    outside.write_text("{}", encoding="utf-8")
    (tree.profiles / "escape.json").symlink_to(outside)
    with pytest.raises(ConfigError) as info:
        load_config(tree, profile="escape")
    link = tree.profiles / "escape.json"
    assert info.value.problems == [f"--profile escape: {link} leads outside profiles/ (a symlink); "
                                   "use --config FILE for a file elsewhere"]


def test_a_profile_name_with_json_suffix_is_the_profile(tree: Paths) -> None:
    assert load_config(tree, profile="offline.json").data == load_config(tree, profile="offline").data


# -- the schema: full-match patterns and cross-field checks that cannot crash -------------------------

def _patterns(node: Any, where: str = "$") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                found.append((where, value))
            else:
                found.extend(_patterns(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_patterns(value, f"{where}[{i}]"))
    return found


def test_every_config_pattern_matches_the_whole_string() -> None:
    """`^...$` lets "x\\n" through in Python's re (and so in jsonschema): every pattern of the config
    schema, components' config entries included, is anchored with \\A and \\Z."""
    schema = catalog.load(REPO_ROOT).config_schema(json.loads((REPO_ROOT / "config.schema.json").read_text()))
    patterns = _patterns(schema)
    assert len(patterns) >= 25
    loose = [(w, p) for w, p in patterns if not (p.startswith("\\A") and p.endswith("\\Z"))]
    assert loose == []
    for where, pattern in patterns:  # and none of them takes a newline at the end of anything it takes
        assert not re.search(pattern, "a\n") and not re.search(pattern, "1\n"), where


def test_shipped_config_still_loads(tree: Paths) -> None:
    assert load_config(tree).data["cluster"]["name"] == "kiln"
    assert load_config(tree, profile="offline").data["build"]["targets"] == ["debian-12"]


JUNK = [5, "x", [5], {"a": 1}, None, True, 1.5, [[]], [{"x": 1}]]


@pytest.mark.parametrize("junk", JUNK, ids=[json.dumps(j) for j in JUNK])
def test_cross_field_checks_never_crash_on_wrong_types(tree: Paths, junk: Any) -> None:
    base = json.loads(tree.config.read_text(encoding="utf-8"))
    for section in ("build", "trial", "cluster", "components", "aws", "targets"):
        data = dict(base, **{section: junk})
        semantic_problems(data)
        for key in list(base[section]) if isinstance(base[section], dict) else []:
            semantic_problems(dict(base, **{section: dict(base[section], **{key: junk})}))
    semantic_problems({"cluster": {"shapes": ["3m"], "first_host": junk}})
    semantic_problems({"components": {"mesos": {"supported_targets": junk}, "exclude": junk}})


def test_wrong_types_are_reported_by_the_schema_alone(tree: Paths) -> None:
    """No cross-field message about a section the schema already refused."""
    with pytest.raises(ConfigError) as info:
        load_config(tree, sets=["cluster.shapes=[5]", 'cluster.first_host="abc"', "build=5"])
    assert info.value.problems == ["$.build: expected object, got integer 5",
                                   '$.cluster.first_host: expected integer, got string "abc"',
                                   "$.cluster.shapes[0]: expected string, got integer 5"]
