"""The user-data script: it carries the node spec unchanged and never a secret."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kiln.aws import userdata
from kiln.config.shapes import parse_shape, specs_for_addresses, validate_spec


def _spec(**options: Any) -> dict[str, Any]:
    (spec,) = specs_for_addresses(parse_shape("1"), "demo", ["172.31.0.4"], options)
    return spec


def test_round_trip_and_the_script_shape() -> None:
    spec = _spec(marathon=True, agent={"attributes": {"rack": "r1"}})
    script = userdata.render(spec)
    assert script.startswith("#!/bin/sh\n") and "set -eu\n" in script
    assert script.endswith("exec /usr/local/sbin/kiln-node apply /etc/kiln/node.json\n")
    assert userdata.spec_from(script) == spec
    assert validate_spec(userdata.spec_from(script)) == []


def test_the_shell_writes_the_spec_byte_for_byte(tmp_path: Path) -> None:
    # A value with characters a shell would expand if the here-document were not quoted.
    spec = _spec(work_dir="/var/lib/mesos", agent={"resources": {"ports": "[31000-32000]"},
                                                   "attributes": {"note": "$HOME`id`"}})
    script = userdata.render(spec).replace("/etc/kiln", str(tmp_path / "etc" / "kiln"))
    script = script.replace("exec /usr/local/sbin/kiln-node apply", "exec cat")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    written = (tmp_path / "etc" / "kiln" / "node.json").read_text()
    assert done.stdout == written
    assert userdata.spec_from(userdata.render(spec)) == json.loads(written)
    assert "$HOME`id`" in written


@pytest.mark.parametrize("key", ["access_key", "secret_key"])
def test_rancher_keys_never_go_into_user_data(key: str) -> None:
    spec = _spec(rancher={"cattle_url": "https://rancher.example/v1", key: "s3cr3t"})
    assert userdata.secret_problems(spec) == [f"mesos: options.rancher.{key}"]
    with pytest.raises(ValueError, match=re.escape(f"options.rancher.{key}")):
        userdata.render(spec)


def test_a_url_alone_is_no_secret() -> None:
    spec = _spec(rancher={"cattle_url": "https://rancher.example/v1", "access_key": "", "secret_key": ""})
    assert userdata.secret_problems(spec) == []
    assert "rancher.example" in userdata.render(spec)


def test_user_data_over_the_ec2_limit_is_refused() -> None:
    attributes = {f"a{i}": "x" * 40 for i in range(400)}
    with pytest.raises(ValueError, match="EC2 accepts at most 16384"):
        userdata.render(_spec(agent={"attributes": attributes}))


def test_foreign_user_data_is_not_mistaken_for_a_spec() -> None:
    with pytest.raises(ValueError, match="not a kiln user-data script"):
        userdata.spec_from("#cloud-config\npackages: [htop]\n")
