"""kiln-node against hostile input: spec files that are not specs, --root values that are / in
disguise, and roots whose files or symlinks kiln-node must not use.

Every case runs the real program (`python -m kiln_node`) and checks what a person at the console
sees: the exit code (2 bad spec or --root, 1 a file under the root that cannot be used), exactly
one error line naming the input (the spec file, the --root value, or the file under the root)
with what is wrong, no traceback, and nothing written: every file under the test's directory,
the root and the sentinel directory outside it that the symlinks point to, is the same
afterwards, contents, modes and mtimes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from python39 import python39

from kiln.paths import REPO_ROOT

TIMEOUT = 30  # a FIFO opened for reading without a writer would block forever


def standalone() -> dict[str, Any]:
    return {"cluster": "kiln", "role": "standalone", "node_id": 1, "name": "mesos", "ip": "10.141.141.10",
            "masters": ["10.141.141.10"]}


def agent() -> dict[str, Any]:
    return {"cluster": "kiln", "role": "agent", "node_id": 4, "name": "a1", "ip": "10.141.141.13",
            "masters": ["10.141.141.10", "10.141.141.11", "10.141.141.12"]}


@dataclass(frozen=True)
class Env:
    tmp: Path
    root: Path  # an image tree with an /etc/hosts of its own
    outside: Path  # a sentinel directory next to the root, with one file
    spec: Path

    def write_spec(self, data: Any) -> None:
        self.spec.write_text(data if isinstance(data, str) else json.dumps(data))

    def apply(self) -> list[str]:
        return ["apply", str(self.spec), "--root", str(self.root)]


@pytest.fixture
def make_env(node_root: Callable[[Path], Path]) -> Callable[[Path], Env]:
    """A root that looks like a kiln image (its component catalog in place) with an /etc/hosts of
    its own, a sentinel directory outside it, and where the spec goes."""
    return lambda tmp: _env(tmp, node_root)


def _env(tmp: Path, node_root: Callable[[Path], Path]) -> Env:
    env = Env(tmp, tmp / "root", tmp / "outside", tmp / "spec.json")
    node_root(env.root)
    (env.root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    env.outside.mkdir()
    (env.outside / "x").write_text("sentinel\n")
    return env


@dataclass(frozen=True)
class Hostile:
    id: str
    prepare: Callable[[Env], list[str]]  # makes the files, returns kiln-node's arguments
    code: int
    names: Callable[[Env], str]  # the input the message must name
    says: str  # and what it must say about it


# -- building the cases ------------------------------------------------------------------------

def spec_file(content: str | bytes) -> Callable[[Env], list[str]]:
    def prepare(env: Env) -> list[str]:
        if isinstance(content, bytes):
            env.spec.write_bytes(content)
        else:
            env.spec.write_text(content)
        return env.apply()
    return prepare


def spec_with(change: Callable[[dict[str, Any]], None], base: Callable[[], dict[str, Any]] = standalone
              ) -> Callable[[Env], list[str]]:
    def prepare(env: Env) -> list[str]:
        spec = base()
        change(spec)
        env.write_spec(spec)
        return env.apply()
    return prepare


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


def spec_path(env: Env) -> str:
    return str(env.spec)


def under_root(path: str) -> Callable[[Env], str]:
    return lambda env: str(env.root / path)


def with_root(make: Callable[[Env], None], command: str = "apply") -> Callable[[Env], list[str]]:
    """A valid spec, and a root `make` spoils."""
    def prepare(env: Env) -> list[str]:
        env.write_spec(standalone())
        make(env)
        if command == "status":
            return ["status", "--root", str(env.root)]
        return env.apply()
    return prepare


def root_arg(value: Callable[[Env], str], command: str = "apply") -> Callable[[Env], list[str]]:
    """--root spelled `value`. Roots that are / in disguise get --dry-run: were kiln-node to
    accept them, it must not touch this machine's /etc; the refusal comes before either."""
    def prepare(env: Env) -> list[str]:
        env.write_spec(standalone())
        if command == "status":
            return ["status", "--root", value(env)]
        return ["apply", str(env.spec), "--root", value(env), "--dry-run"]
    return prepare


def symlink(link: str, target: Callable[[Env], str]) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        path = env.root / link
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target(env))
    return make


def file_at(path: str, content: bytes | None = None, kind: str = "file") -> Callable[[Env], None]:
    def make(env: Env) -> None:
        real = env.root / path
        if real.exists():
            real.unlink()
        real.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            real.mkdir()
        elif kind == "fifo":
            os.mkfifo(real)
        else:
            real.write_bytes(content or b"")
    return make


STATE = "var/lib/kiln-node/applied.json"


def state(data: Any) -> Callable[[Env], None]:
    text = data if isinstance(data, str) else json.dumps(data)
    return file_at(STATE, text.encode())


def good_state(**changes: Any) -> dict[str, Any]:
    return {"format": 1, "spec": standalone(), "files": {}, "units": [], **changes}


LATIN1_SPEC = json.dumps({**standalone(), "name": "m\u00e9sos"}, ensure_ascii=False).encode("latin-1")
OFFSET_E_ACUTE = LATIN1_SPEC.index(b"\xe9")
DEEP_OPTIONS = '{"cluster": "kiln", "options": ' + '{"a": ' * 100 + "1" + "}" * 100 + "}"
SPEC_TEXT = json.dumps(standalone())
LATIN1_HOSTS = "127.0.0.1 localhost\n10.0.0.9 caf\u00e9\n".encode("latin-1")

CASES = [
    # The spec file itself.
    Hostile("spec-not-utf8", spec_file(b"\xff\xfe" + SPEC_TEXT.encode("utf-16-le")), 2, spec_path,
            "not UTF-8 text (byte 0xff at offset 0)"),
    Hostile("spec-latin1", spec_file(LATIN1_SPEC), 2, spec_path,
            f"not UTF-8 text (byte 0xe9 at offset {OFFSET_E_ACUTE})"),
    Hostile("spec-directory", lambda env: (env.spec.mkdir(), env.apply())[1], 2, spec_path,
            "a directory, not a regular file"),
    Hostile("spec-fifo", lambda env: (os.mkfifo(env.spec), env.apply())[1], 2, spec_path,
            "a FIFO, not a regular file"),
    Hostile("spec-device", lambda env: ["apply", "/dev/zero", "--root", str(env.root)], 2,
            lambda env: "/dev/zero", "a character device, not a regular file"),
    Hostile("spec-huge", spec_file(" " * (2 << 20) + SPEC_TEXT), 2, spec_path, "larger than 1048576 bytes"),
    Hostile("spec-missing", lambda env: env.apply(), 2, spec_path, "no such file"),
    Hostile("spec-empty", spec_file(""), 2, spec_path, "empty: a node spec is a JSON object"),
    Hostile("spec-not-json", spec_file('{"role": "master",'), 2, spec_path, "not valid JSON (Expecting"),
    Hostile("spec-nested-5000", spec_file("[" * 5000 + "]" * 5000), 2, spec_path,
            "nested more than 16 levels deep"),
    Hostile("spec-nested-100", spec_file(DEEP_OPTIONS), 2, spec_path, "nested more than 16 levels deep"),
    Hostile("spec-nan", spec_file(SPEC_TEXT.replace('"node_id": 1', '"node_id": NaN')), 2, spec_path,
            "NaN is not a JSON number"),
    Hostile("spec-infinity", spec_file(SPEC_TEXT.replace('"node_id": 1', '"node_id": -Infinity')), 2,
            spec_path, "-Infinity is not a JSON number"),
    Hostile("spec-400-digits", spec_file(SPEC_TEXT.replace('"node_id": 1', '"node_id": ' + "7" * 400)), 2,
            spec_path, "has 400 characters, more than the 32 accepted"),
    Hostile("spec-float-overflow", spec_file(SPEC_TEXT.replace('"node_id": 1', '"node_id": 1e400')), 2,
            spec_path, "the number 1e400 is beyond a float's range"),
    Hostile("spec-duplicate-key", spec_file(SPEC_TEXT[:-1] + ', "role": "agent"}'), 2, spec_path,
            'the key "role" appears twice in one object'),
    # Wrong types, at every level.
    Hostile("top-array", spec_file("[]"), 2, spec_path, "$: expected object, got array []"),
    Hostile("top-null", spec_file("null"), 2, spec_path, "$: expected object, got null null"),
    Hostile("cluster-number", spec_with(put("cluster", 7)), 2, spec_path,
            "$.cluster: expected string, got integer 7"),
    Hostile("node-id-bool", spec_with(put("node_id", True)), 2, spec_path,
            "$.node_id: expected integer, got boolean true"),
    Hostile("masters-string", spec_with(put("masters", "10.141.141.10")), 2, spec_path,
            '$.masters: expected array, got string "10.141.141.10"'),
    Hostile("masters-item-number", spec_with(put("masters", [10]), agent), 2, spec_path,
            "$.masters[0]: expected string, got integer 10"),
    Hostile("options-array", spec_with(put("options", [])), 2, spec_path,
            "$.options: expected object, got array []"),
    Hostile("attributes-array", spec_with(put("options.agent.attributes", ["rack"])), 2, spec_path,
            '$.options.agent.attributes: expected object, got array ["rack"]'),
    Hostile("attribute-value-object", spec_with(put("options.agent.attributes", {"rack": {"r": 1}})), 2,
            spec_path, "$.options.agent.attributes.rack: expected ['string', 'number'], got object"),
    Hostile("rancher-url-number", spec_with(put("options.rancher", {"cattle_url": 5})), 2, spec_path,
            "$.options.rancher.cattle_url: expected string, got integer 5"),
    # Control characters: `^...$` patterns in Python accept a trailing newline.
    Hostile("name-trailing-newline", spec_with(put("name", "mesos\n")), 2, spec_path,
            '$.name: control characters (such as a newline) are not allowed, got "mesos\\n"'),
    Hostile("ip-trailing-newline", spec_with(put("ip", "10.141.141.13\n"), agent), 2, spec_path,
            '$.ip: control characters (such as a newline) are not allowed, got "10.141.141.13\\n"'),
    Hostile("master-trailing-newline", spec_with(put("masters", ["10.141.141.10\n"]), agent), 2, spec_path,
            "$.masters[0]: control characters (such as a newline) are not allowed"),
    Hostile("cluster-nul", spec_with(put("cluster", "kiln\u0000")), 2, spec_path,
            "$.cluster: control characters (such as a newline) are not allowed"),
    Hostile("name-line-separator", spec_with(put("name", "mesos\u2028evil")), 2, spec_path,
            "$.name: control characters (such as a newline) are not allowed"),
    Hostile("attribute-key-newline", spec_with(put("options.agent.attributes", {"rack\n": "r1"})), 2,
            spec_path, "$.options.agent.attributes: control characters (such as a newline) are not allowed"),
    Hostile("secret-lone-surrogate",
            spec_with(put("options.rancher", {"cattle_url": "http://10.0.0.2/v1", "access_key": "a",
                                              "secret_key": "s\ud800"})), 2, spec_path,
            "$.options.rancher.secret_key: not valid Unicode text (a lone surrogate"),
    # --root: / in disguise, or not a directory.
    Hostile("root-double-slash", root_arg(lambda env: "//"), 2, lambda env: "--root //",
            "this is / under another name"),
    Hostile("root-slash-dotdot", root_arg(lambda env: "/.."), 2, lambda env: "--root /..",
            "this is / under another name"),
    Hostile("root-climbs-to-slash", root_arg(lambda env: str(env.tmp) + "/.." * len(env.tmp.parts)), 2,
            lambda env: "--root " + str(env.tmp) + "/..", "this is / under another name"),
    Hostile("root-symlink-to-slash", root_arg(lambda env: (os.symlink("/", env.tmp / "slash"),
                                                           str(env.tmp / "slash"))[1]),
            2, lambda env: f"--root {env.tmp / 'slash'}", "this is / under another name"),
    Hostile("root-is-a-file", root_arg(lambda env: str(env.root / "etc/hosts")), 2,
            lambda env: f"--root {env.root / 'etc/hosts'}", "not a directory (a regular file)"),
    Hostile("status-root-double-slash", root_arg(lambda env: "//", "status"), 2, lambda env: "--root //",
            "this is / under another name"),
    # Symlinks under the root that lead out of it.
    Hostile("etc-links-outside", with_root(symlink("etc", lambda env: str(env.outside))), 1,
            under_root("etc"), "is a symlink to"),
    Hostile("hosts-links-outside", with_root(symlink("etc/hosts", lambda env: str(env.outside / "x"))), 1,
            under_root("etc/hosts"), "outside the root"),
    Hostile("hosts-links-to-missing-outside",
            with_root(symlink("etc/hosts", lambda env: str(env.outside / "new"))), 1,
            under_root("etc/hosts"), "outside the root"),
    Hostile("hosts-relative-link-out", with_root(symlink("etc/hosts", lambda env: "../../outside/x")), 1,
            under_root("etc/hosts"), "outside the root"),
    Hostile("state-dir-links-outside", with_root(symlink("var/lib/kiln-node", lambda env: str(env.outside))),
            1, under_root("var/lib/kiln-node"), "outside the root"),
    Hostile("mesos-dir-links-outside",
            with_root(symlink("etc/mesos-master", lambda env: str(env.outside))), 1,
            under_root("etc/mesos-master"), "outside the root"),
    # System files under the root that kiln-node reads.
    Hostile("hosts-not-utf8", with_root(file_at("etc/hosts", LATIN1_HOSTS)), 1, under_root("etc/hosts"),
            f"not UTF-8 text (byte 0xe9 at offset {LATIN1_HOSTS.index(0xE9)})"),
    Hostile("hosts-directory", with_root(file_at("etc/hosts", kind="dir")), 1, under_root("etc/hosts"),
            "a directory, not a regular file"),
    Hostile("hosts-fifo", with_root(file_at("etc/hosts", kind="fifo")), 1, under_root("etc/hosts"),
            "a FIFO, not a regular file"),
    Hostile("flag-dir-is-a-file", with_root(file_at("etc/mesos-master", b"not a directory\n")), 1,
            under_root("etc/mesos-master"), "is not a directory"),
    Hostile("manifest-fifo", with_root(file_at("etc/kiln/manifest.json", kind="fifo")), 1,
            under_root("etc/kiln/manifest.json"), "unreadable image manifest (a FIFO"),
    Hostile("manifest-nested", with_root(file_at("etc/kiln/manifest.json", b"[" * 5000 + b"]" * 5000)), 1,
            under_root("etc/kiln/manifest.json"), "unreadable image manifest (nested more than"),
    Hostile("catalog-fifo", with_root(file_at("etc/kiln/catalog.json", kind="fifo")), 1,
            under_root("etc/kiln/catalog.json"), "unreadable component catalog (a FIFO"),
    Hostile("catalog-links-outside",
            with_root(symlink("etc/kiln/catalog.json", lambda env: str(env.outside / "x"))), 1,
            under_root("etc/kiln/catalog.json"), "outside the root"),
    Hostile("catalog-nan", with_root(file_at("etc/kiln/catalog.json", b'{"version": NaN}')), 1,
            under_root("etc/kiln/catalog.json"), "unreadable component catalog (NaN is not a JSON number"),
    Hostile("status-catalog-fifo", with_root(file_at("etc/kiln/catalog.json", kind="fifo"), "status"), 1,
            under_root("etc/kiln/catalog.json"), "unreadable component catalog (a FIFO"),
    # The state file of the last apply.
    Hostile("state-not-json", with_root(state("{")), 1, under_root(STATE),
            "the record of the last apply is unusable (not valid JSON"),
    Hostile("state-not-utf8", with_root(file_at(STATE, b'{"format": 1, "spec": "\xff"}')), 1,
            under_root(STATE), "unusable (not UTF-8 text (byte 0xff"),
    Hostile("state-directory", with_root(file_at(STATE, kind="dir")), 1, under_root(STATE),
            "unusable (a directory, not a regular file)"),
    Hostile("state-other-format", with_root(state(good_state(format=2))), 1, under_root(STATE),
            "unusable (format 2 where this kiln-node reads format 1)"),
    Hostile("state-files-not-object", with_root(state(good_state(files=["/etc/hosts"]))), 1,
            under_root(STATE), 'unusable ("files" is not an object)'),
    Hostile("state-file-path-climbs",
            with_root(state(good_state(files={"/etc/mesos-master/../../x": "0" * 64}))), 1, under_root(STATE),
            "not an absolute normalized path"),
    Hostile("state-spec-edited", with_root(state(good_state(spec={**standalone(), "role": "boss"}))), 1,
            under_root(STATE), "its node spec fails the checks: $.role"),
    Hostile("state-nested", with_root(state('{"format": 1, "spec": ' + "[" * 3000 + "]" * 3000 + "}")), 1,
            under_root(STATE), "nested more than 24 levels deep"),
    Hostile("status-state-not-json", with_root(state("{"), "status"), 1, under_root(STATE),
            "the record of the last apply is unusable"),
    Hostile("status-state-spec-missing-ip",
            with_root(state(good_state(spec={k: v for k, v in standalone().items() if k != "ip"})), "status"),
            1, under_root(STATE), "missing required key 'ip'"),
]


# -- running and comparing ---------------------------------------------------------------------

def run_node(python: str, args: list[str], env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, "-m", "kiln_node", *args], capture_output=True, text=True, env=environment,
                          timeout=TIMEOUT, check=False, cwd=REPO_ROOT)


def tree(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `top`, symlinks not followed: type, mode, and content (file bytes and mtime,
    link target). FIFOs are recorded by type only: reading one would block."""
    out: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, names in os.walk(top, followlinks=False):
        for name in dirs + names:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            key = os.path.relpath(path, top)
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                out[key] = ("file", Path(path).read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                out[key] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


# What kiln-node would write on this machine were it to take / in disguise for an image tree.
SYSTEM_PATHS = ("/etc/hosts", "/var/lib/kiln-node", "/etc/mesos", "/etc/zookeeper/conf/zoo.cfg")


def system_state() -> dict[str, tuple[int, int] | None]:
    out: dict[str, tuple[int, int] | None] = {}
    for path in SYSTEM_PATHS:
        try:
            st = os.lstat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            out[path] = None
    return out


def check_refusal(case: Hostile, env: Env, python: str, extra_env: dict[str, str] | None = None) -> None:
    args = case.prepare(env)
    before, system_before = tree(env.tmp), system_state()
    result = run_node(python, args, extra_env)
    where = f"{case.id}: kiln-node {' '.join(args)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, where
    assert result.returncode == case.code, where
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("kiln-node: error: ")]
    assert len(errors) == 1, where
    assert case.names(env) in errors[0] and case.says in errors[0], where
    # Besides the error, at most the spec problem count ("...; nothing written").
    assert all(line in errors or line.endswith("in the node spec; nothing written") for line in lines), where
    assert len(lines) <= 2, where
    assert tree(env.tmp) == before, where  # the root, the sentinel outside it, the spec's directory
    assert system_state() == system_before, where


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_with_one_message_and_nothing_written(
        tmp_path: Path, make_env: Callable[[Path], Env], case: Hostile) -> None:
    check_refusal(case, make_env(tmp_path), sys.executable)


def test_the_table_is_large_and_covers_every_exit_code() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {1, 2}


def test_the_same_harness_sees_a_write(tmp_path: Path, make_env: Callable[[Path], Env]) -> None:
    """The comparison the cases rely on does notice when kiln-node writes: a good spec on a good root."""
    env = make_env(tmp_path)
    env.write_spec(standalone())
    before = tree(env.tmp)
    result = run_node(sys.executable, env.apply())
    assert result.returncode == 0, result.stderr
    after = tree(env.tmp)
    assert after != before
    assert after["root/etc/hosts"][1] != before["root/etc/hosts"][1]
    assert "root/var/lib/kiln-node/applied.json" in after and "outside/x" in after


def test_a_symlink_that_stays_inside_the_root_is_used(tmp_path: Path, make_env: Callable[[Path], Env]
                                                      ) -> None:
    """Only links that lead out of the root are refused: a relative link within it is followed."""
    env = make_env(tmp_path)
    env.write_spec(standalone())
    (env.root / "srv").mkdir()
    (env.root / "etc/hosts").rename(env.root / "srv/hosts")
    (env.root / "etc/kiln-flags").mkdir()
    (env.root / "etc/mesos-master").symlink_to("kiln-flags")
    result = run_node(sys.executable, env.apply())
    assert result.returncode == 0, result.stderr
    assert (env.root / "etc/kiln-flags/ip").read_text() == "10.141.141.10\n"
    assert (env.outside / "x").read_text() == "sentinel\n"



PY39_CASES = ["spec-not-utf8", "spec-fifo", "spec-nested-5000", "spec-nan", "spec-400-digits",
              "spec-duplicate-key", "name-trailing-newline", "secret-lone-surrogate", "root-double-slash",
              "hosts-links-outside", "hosts-not-utf8", "state-not-json", "manifest-nested", "catalog-fifo"]


@pytest.mark.parametrize("case", [c for c in CASES if c.id in PY39_CASES],
                         ids=[c.id for c in CASES if c.id in PY39_CASES])
def test_refusals_are_the_same_on_python_3_9(tmp_path: Path, make_env: Callable[[Path], Env],
                                             case: Hostile) -> None:
    """Images run kiln-node on their own python3, 3.9 on the oldest."""
    python, env = python39()
    check_refusal(case, make_env(tmp_path), python, env)


# -- a flood of problems ---------------------------------------------------------------------------

def test_a_flood_of_spec_problems_prints_a_bounded_summary(tmp_path: Path,
                                                           make_env: Callable[[Path], Env]) -> None:
    """A generated spec gone wrong (20000 unknown keys): the first 20 problems and the count, not
    20000 lines on the console; nothing written."""
    env = make_env(tmp_path)
    env.write_spec({**standalone(), **{f"junk_{i:05d}": i for i in range(20_000)}})
    before, system_before = tree(env.tmp), system_state()
    result = run_node(sys.executable, env.apply())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 21 and len(result.stderr) < 5_000, result.stderr[:2000]
    assert lines[0] == (f"kiln-node: error: {env.spec}: $.junk_00000: unknown key "
                        "(allowed: cluster, ip, masters, name, node_id, options, role)")
    assert lines[-1] == (f"kiln-node: {env.spec}: 20000 problems in the node spec (20 shown, 19980 more "
                         "not); nothing written")
    assert tree(env.tmp) == before and system_state() == system_before
