"""`invoke validate` never reports a check as passed that did not check everything: a skipped row is
not a pass, `vagrant validate -p` (provider blocks left out) and a template validated with an unpinned
source checksum are `partial` in the result column, and the closing line counts each kind apart.
Real packer and vagrant (skipped where not installed: scripts/setup installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.checks import FAIL, PARTIAL, PASS, SKIP, Check, Summary
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image import packer
from kiln.image.render import RenderOptions, render_all
from kiln.image.validate import packer_checks
from kiln.paths import REPO_ROOT, Paths

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a kiln.table table, by column name (columns are where the rule's dashes are)."""
    lines = text.splitlines()
    header, rule = lines[0], lines[1]
    starts = [i for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for line in lines[2:]]


def test_only_whole_checks_that_ran_count_as_passed() -> None:
    summary = Summary([Check("packer validate", "a", PASS),
                       Check("packer validate", "b", PARTIAL, "checksum none"),
                       Check("vagrant validate", "c", SKIP, "vagrant not installed"),
                       Check("shellcheck", "d", PASS)])
    assert summary.ok
    assert summary.verdict() == ("2 passed, 1 partial, 1 skipped, 0 failed (partial and skipped checks did "
                                 "not check everything: see their detail)")
    summary.add(Check("shellcheck", "e", FAIL, "2 finding(s)"))
    assert not summary.ok and summary.verdict().startswith("2 passed, 1 partial, 1 skipped, 1 failed")
    assert [row["result"] for row in table_rows(summary.table())] == [
        "pass", "partial", "skipped", "pass", "FAIL"]
    assert Summary([Check("shellcheck", "x", PASS)]).verdict() == "1 passed, 0 partial, 0 skipped, 0 failed"


@pytest.mark.parametrize("result", [PARTIAL, SKIP])
def test_a_partial_or_skipped_row_must_say_why(result: str) -> None:
    with pytest.raises(ValueError, match="must say why"):
        Check("vagrant validate", "x", result)
    with pytest.raises(ValueError, match="unknown check result"):
        Check("vagrant validate", "x", "passed")


@pytest.mark.skipif(shutil.which("packer") is None,
                    reason="packer is not installed (scripts/setup installs it)")
@pytest.mark.parametrize(("sha256", "expected"), [("", PARTIAL), ("ab" * 32, PASS)],
                         ids=["unpinned", "pinned"])
def test_an_unpinned_source_checksum_is_a_partial_pass(tree: Paths, ssh_key: Path, sha256: str,
                                                       expected: str) -> None:
    cfg = load_config(tree, sets=['build.targets=["ubuntu-24.04"]', 'build.builders=["qemu"]',
                                  f'targets.ubuntu-24.04.image.sha256="{sha256}"'])
    version = packer.installed_version()
    assert version is not None
    options = RenderOptions(packer_version=version, git_revision="test", accelerator="tcg", ssh_key=ssh_key)
    checks = packer_checks(render_all(cfg, select_pairs(cfg.data), tree, options), tree)
    first = checks[0]
    assert (first.result, first.subject) == (expected, "ubuntu-24.04-qemu (system)"), first.detail
    assert ("not pinned" in first.detail) == (expected == PARTIAL)
    assert {c.result for c in checks[1:]} == {PASS}  # the payload layer starts from a local disk


def _tree_with_venv(tree: Paths) -> Paths:
    """The top-level Vagrantfile runs `.venv/bin/python -m kiln.vagrant.trial`: give the copy ours."""
    (tree.root / ".venv").symlink_to(REPO_ROOT / ".venv")
    return tree


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="vagrant is not installed (scripts/setup installs it)")
def test_invoke_validate_says_partial_in_the_result_column_and_counts_it_apart(tree: Paths) -> None:
    _tree_with_venv(tree)
    env = {**os.environ, "KILN_ROOT": str(tree.root)}
    done = subprocess.run([*INVOKE, "validate", "--target", "ubuntu-24.04", "--builder", "qemu",
                           "--set", 'cluster.shapes=["1"]', "--set", 'cluster.default_shape="1"'],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    table = done.stdout[done.stdout.index("check "):].strip().split("\n\n")[0]
    results = {(r["check"], r["subject"]): (r["result"], r["detail"]) for r in table_rows(table)}
    assert results["packer validate", "ubuntu-24.04-qemu (system)"][0] == "partial"
    assert "not pinned" in results["packer validate", "ubuntu-24.04-qemu (system)"][1]
    if shutil.which("VBoxManage") is None:
        result, detail = results["vagrant validate", "build/vagrant/kiln-1 (virtualbox)"]
        assert (result, "provider blocks not checked" in detail) == ("partial", True)
    counts = {r for r, _ in results.values()}
    assert counts <= {"pass", "partial", "skipped", "FAIL"}
    last = done.stdout.strip().splitlines()[-1]
    n = {word: sum(1 for r, _ in results.values() if r == result)
         for word, result in (("passed", "pass"), ("partial", "partial"), ("skipped", "skipped"),
                              ("failed", "FAIL"))}
    assert last.startswith(f"{n['passed']} passed, {n['partial']} partial, {n['skipped']} skipped, "
                           f"{n['failed']} failed"), done.stdout[-2000:]
    assert done.returncode == (1 if n["failed"] else 0), done.stdout[-3000:] + done.stderr[-2000:]
