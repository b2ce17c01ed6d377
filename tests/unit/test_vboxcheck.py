"""The VirtualBox check's sequence and its cleanup. VirtualBox cannot be installed on these
machines, so VBoxManage is a STAND-IN here: a script that records its arguments, answers
`showvminfo` with a state, and fails on the step a test asks it to. The real VBoxManage runs
only where VirtualBox is installed (kiln.image.build calls this check there)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from kiln.errors import KilnError
from kiln.image import vboxcheck
from kiln.runner import StepFailed


def _standin(tmp_path: Path, fail_on: str = "") -> tuple[Path, Path]:
    calls = tmp_path / "calls.jsonl"
    exe = tmp_path / "VBoxManage"
    exe.write_text(f"""#!/usr/bin/env python3
import json, sys
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "showvminfo":
    print('VMState="poweroff"')
if {fail_on!r} and " ".join(sys.argv[1:]).startswith({fail_on!r}):
    print("VBoxManage: error: stand-in failure", file=sys.stderr)
    sys.exit(1)
""")
    exe.chmod(0o755)
    return exe, calls


def _box(tmp_path: Path) -> Path:
    box = tmp_path / "debian-12-virtualbox.box"
    with tarfile.open(box, "w:gz") as tar:
        for name, data in (("box.ovf", b"<Envelope/>"), ("metadata.json", b'{"provider":"virtualbox"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return box


def _check(tmp_path: Path, exe: Path) -> vboxcheck.Check:
    return vboxcheck.Check(str(exe), _box(tmp_path), "debian-12-virtualbox", "admin", tmp_path / "key",
                           tmp_path / "check.log")


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_box_is_dry_run_imported_booted_logged_into_and_removed(tmp_path: Path) -> None:
    exe, calls = _standin(tmp_path)
    seen: list[tuple[Path, str]] = []

    def reach(config: Path, alias: str) -> bool:
        seen.append((config, alias))
        text = config.read_text()
        assert "HostName 127.0.0.1" in text and "User admin" in text
        assert f"IdentityFile {tmp_path / 'key'}" in text
        return len(seen) == 2  # the second attempt gets in

    said: list[str] = []
    seconds = vboxcheck.import_and_boot(_check(tmp_path, exe), reach=reach, say=said.append)
    assert 0 <= seconds < 60
    verbs = [c[0] for c in _calls(calls)]
    assert verbs == ["import", "import", "modifyvm", "startvm", "controlvm", "showvminfo", "unregistervm"]
    dry, real, forward, start, off, _, unregister = _calls(calls)
    assert dry[1].endswith("box.ovf") and dry[2] == "--dry-run"
    vm = real[real.index("--vmname") + 1]
    assert vm.startswith("kiln-check-debian-12-virtualbox-")
    assert all(vm in c for c in (forward, start, off, unregister))
    assert forward[3].startswith("kiln-ssh,tcp,127.0.0.1,") and forward[3].endswith(",,22")
    assert start[-2:] == ["--type", "headless"] and unregister[-1] == "--delete"
    assert [alias for _, alias in seen] == [vm, vm]
    assert any("logged in over SSH" in line for line in said)


def test_a_vm_that_never_answers_is_still_removed(tmp_path: Path) -> None:
    exe, calls = _standin(tmp_path)
    with pytest.raises(KilnError, match=r"no SSH from the VirtualBox VM kiln-check-.* after 0s"):
        vboxcheck.import_and_boot(_check(tmp_path, exe), reach=lambda *_: False, ssh_timeout=0)
    assert [c[0] for c in _calls(calls)][-3:] == ["controlvm", "showvminfo", "unregistervm"]


def test_a_failed_start_removes_the_imported_vm(tmp_path: Path) -> None:
    exe, calls = _standin(tmp_path, fail_on="startvm")
    with pytest.raises(StepFailed, match="VBoxManage startvm"):
        vboxcheck.import_and_boot(_check(tmp_path, exe), reach=lambda *_: True)
    verbs = [c[0] for c in _calls(calls)]
    assert verbs[-3:] == ["controlvm", "showvminfo", "unregistervm"]


def test_a_refused_dry_run_imports_nothing(tmp_path: Path) -> None:
    exe, calls = _standin(tmp_path, fail_on="import")
    with pytest.raises(StepFailed, match="import --dry-run"):
        vboxcheck.import_and_boot(_check(tmp_path, exe), reach=lambda *_: True)
    assert [c[0] for c in _calls(calls)] == ["import"]
