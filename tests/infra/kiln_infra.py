"""The pytest plugin of kiln's testinfra suites (options, fixtures, helpers), which run over SSH
against a build VM or a booted node. The suites are each component's components/<name>/test_*.py
plus the image-wide ones in tests/infra/; kiln.image.verify picks them from the catalog:

    PYTHONPATH=tests/infra pytest -p kiln_infra tests/infra components/zookeeper/test_zookeeper.py ... \
        --hosts=ssh://NAME --ssh-config=FILE --kiln-phase=bake|boot [--kiln-role=R] [--kiln-expect=a,b]

With several hosts (a cluster) each one is checked for its own role, read from its
/etc/kiln/node.json (`--kiln-role=auto`, the default).

Phase `bake` checks an image right after provisioning (services installed and disabled,
hygiene); phase `boot` checks a node after `kiln-node apply` (services running and doing
their job). Each suite checks the components the image's /etc/kiln/manifest.json lists (they must
pass). The manifest also says what was meant to be there ("enabled": components.enabled less
components.exclude, as kiln baked the image) and what of it is off on purpose ("not_baked", with
the reason its bake script recorded). So for a component without a record, `require`:
  - enabled and not baked on purpose: skips with the recorded reason;
  - enabled (or named by --kiln-expect) with no record and no reason: FAILS (its bake script did
    not finish, or skipped itself silently);
  - not enabled for this image (left out, or excluded): skips, saying so.
tests/infra/test_manifest.py fails the image once per enabled component that left neither.
"""

from __future__ import annotations

import json
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kiln")
    group.addoption("--kiln-phase", choices=("bake", "boot"), default="boot",
                    help="bake: fresh image, services disabled; boot: node spec applied")
    group.addoption("--kiln-role", choices=("auto", "standalone", "master", "agent"), default="auto",
                    help="the node's role (boot phase); auto: each host's /etc/kiln/node.json")
    group.addoption("--kiln-expect", default="",
                    help="components the image must hold (comma separated): missing ones fail")


@pytest.fixture(scope="session")
def phase(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--kiln-phase"))


@pytest.fixture(scope="module")
def node_spec(host: Any, phase: str) -> dict[str, Any] | None:
    """The node spec kiln-node applied on this host (boot phase), None before any."""
    if phase != "boot":
        return None
    out = host.run("sudo cat /etc/kiln/node.json")
    return json.loads(out.stdout) if out.rc == 0 and out.stdout.strip() else None


@pytest.fixture(scope="module")
def role(request: pytest.FixtureRequest, node_spec: dict[str, Any] | None) -> str:
    given = str(request.config.getoption("--kiln-role"))
    if given != "auto":
        return given
    return str(node_spec["role"]) if node_spec else "standalone"


def boot_only(phase: str) -> None:
    if phase != "boot":
        pytest.skip("a boot-phase check (the node spec is applied at boot)")


def for_roles(role: str, *roles: str) -> None:
    if role not in roles:
        pytest.skip(f"not a check for role {role} (only {', '.join(roles)})")


@pytest.fixture(scope="module")
def manifest(host: Any) -> dict[str, Any]:
    f = host.file("/etc/kiln/manifest.json")
    assert f.exists, "/etc/kiln/manifest.json is missing: the manifest step did not run"
    return json.loads(f.content_string)


class Components(dict):  # type: ignore[type-arg]
    """The manifest's component records; `expected`: the components meant to be in the image (the
    manifest's "enabled" and --kiln-expect); `not_baked`: those off on purpose, with the reason."""

    def __init__(self, records: dict[str, Any] | None = None, expected: frozenset[str] = frozenset(),
                 not_baked: dict[str, str] | None = None) -> None:
        super().__init__(records or {})
        self.expected = expected
        self.not_baked = dict(not_baked or {})


def components_of(manifest: dict[str, Any], expect: str = "") -> Components:
    """The Components of a manifest (pure: tests/unit/test_infra_plugin.py). Images baked before the
    manifest said what was enabled have no "enabled": then only --kiln-expect says it."""
    records = manifest.get("components")
    assert isinstance(records, dict), "/etc/kiln/manifest.json has no 'components' object"
    enabled = manifest.get("enabled", [])
    not_baked = manifest.get("not_baked", {})
    assert isinstance(enabled, list) and isinstance(not_baked, dict), \
        "/etc/kiln/manifest.json: 'enabled' must be a list and 'not_baked' an object"
    return Components(records, frozenset({*(str(n) for n in enabled), *(n for n in expect.split(",") if n)}),
                      {str(k): str(v) for k, v in not_baked.items()})


def missing_records(components: Components) -> list[str]:
    """Components meant to be in the image that left neither a record nor a reason, sorted."""
    return sorted(n for n in components.expected if n not in components and n not in components.not_baked)


@pytest.fixture(scope="module")
def components(manifest: dict[str, Any], request: pytest.FixtureRequest) -> Components:
    return components_of(manifest, str(request.config.getoption("--kiln-expect")))


def require(components: dict[str, Any], name: str) -> dict[str, Any]:
    """`name`'s manifest record; skips or fails the test when there is none (see the module doc)."""
    if name in components:
        return components[name]
    reason = getattr(components, "not_baked", {}).get(name)
    if reason is not None:
        pytest.skip(f"{name} is enabled but not baked into this image: {reason}")
    if name in getattr(components, "expected", ()):
        pytest.fail(f"{name} is enabled for this image but left no record in /etc/kiln/manifest.json and "
                    "no reason: its bake script did not finish, or skipped itself without "
                    "record_component_off")
    pytest.skip(f"{name} is not enabled for this image (components.enabled, components.exclude)")


ENABLED_STATES = {"enabled", "enabled-runtime", "disabled", "static", "masked", "masked-runtime",
                  "indirect", "generated", "alias", "linked", "linked-runtime", "transient"}
ACTIVE_STATES = {"active", "inactive", "failed", "activating", "deactivating", "reloading"}


def unit_state(host: Any, unit: str, query: str = "is-enabled") -> str:
    """systemctl's answer, which must be a real state: an empty or error answer (no bus, no
    such unit) fails the test instead of reading as 'not enabled'."""
    out = host.run(f"sudo systemctl {query} {unit}")
    state = out.stdout.strip()
    known = ENABLED_STATES if query == "is-enabled" else ACTIVE_STATES
    assert state in known, f"systemctl {query} {unit}: {out.stdout!r} {out.stderr!r}"
    return state


def unit_enabled(host: Any, unit: str) -> bool:
    return unit_state(host, unit) in ("enabled", "enabled-runtime")


def unit_active(host: Any, unit: str) -> bool:
    return unit_state(host, unit, "is-active") == "active"


def port_open(host: Any, port: int, address: str = "127.0.0.1") -> bool:
    # bash's /dev/tcp: minimal images have no nc.
    return host.run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}'").rc == 0


def wait_until(host: Any, command: str, seconds: int = 60) -> Any:
    """Run `command` in the guest until it succeeds or `seconds` pass, then once more for the result
    to return. The bound is time, not attempts (a slow command counts against it), read from the
    guest's uptime, which a clock step at boot does not move. Under TCG a JVM service takes minutes
    to answer: budgets are sized for that."""
    now = "$(cut -d. -f1 /proc/uptime)"
    return host.run(
        f"end=$(( {now} + {int(seconds)} )); while [ \"{now}\" -lt \"$end\" ]; do"
        f" out=$({command}) && {{ echo \"$out\"; exit 0; }}; sleep 1; done; {command}"
    )


JVM_CRASH = "A fatal error has been detected by the Java Runtime Environment"


def jvm_run(host: Any, command: str, attempts: int = 3) -> Any:
    """Run a Java client tool (zkCli.sh), again when the JVM itself crashed: under TCG emulation
    the JIT now and then dies with SIGSEGV (exit 134, an hs_err report), which says nothing
    about the service the tool talks to. Any other failure is returned as it is."""
    out = host.run(command)
    for _ in range(attempts - 1):
        if out.rc != 134 and JVM_CRASH not in out.stdout:
            break
        out = host.run(command)
    return out
