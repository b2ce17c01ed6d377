"""The VirtualBox box made from a QEMU bake: its OVF descriptor (deterministic, parameters in the
right places, MAC format, references consistent, valid against DMTF's OVF 1.0 envelope schema and
shaped like a real VirtualBox export), the reproducible VMDK, and the box directory (contents,
checksums, catalog, atomic publish).

The reference is a real VirtualBox export, tests/fixtures/virtualbox/reference-tsuru-box.ovf (the
box.ovf of github.com/tsuru/tsuru-packer, VirtualBox 4.3, SATA AHCI + E1000 NAT; see the README
there). `virtualbox_reader_problems` applies the rules VirtualBox's importer enforces
(src/VBox/Main/xml/ovfreader.cpp) and is itself checked on that reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from bake_samples import fake_bake
from bake_samples import small_qcow2 as make_small_qcow2

from kiln.errors import UserError
from kiln.image import boximage, ovf, virtualbox, vmdk
from kiln.image.artifacts import box_catalog, sha256_of
from kiln.paths import Paths

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "virtualbox"
REFERENCE = FIXTURES / "reference-tsuru-box.ovf"
GOLDEN = FIXTURES / "expected-debian-12.ovf"
SCHEMA = FIXTURES / "schemas" / "kiln-ovf.xsd"
NS = {"ovf": ovf.OVF_NS, "rasd": ovf.RASD_NS, "vssd": ovf.VSSD_NS, "vbox": ovf.VBOX_NS}
OV = "{" + ovf.OVF_NS + "}"
V = "{" + ovf.VBOX_NS + "}"

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None,
                                reason="ruby is not installed (it comes with Debian's vagrant package)")


def machine(**changes: object) -> ovf.Machine:
    base = ovf.Machine(name="kiln-debian-12", os=ovf.os_type("debian"), cpus=2, memory_mb=2048,
                       disk_href="box-disk001.vmdk", disk_bytes=348613120, disk_capacity=12884901888,
                       ident=ovf.identity("debian-12\0" + "ab" * 32), nested_hw_virt=True)
    return replace(base, **changes)  # type: ignore[arg-type]


def parse(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def rasd(item: ET.Element, name: str) -> str | None:
    node = item.find(f"rasd:{name}", NS)
    return node.text if node is not None else None


def items(doc: ET.Element) -> list[ET.Element]:
    return doc.findall("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item", NS)


def item_of_type(doc: ET.Element, resource_type: int) -> ET.Element:
    (found,) = [i for i in items(doc) if rasd(i, "ResourceType") == str(resource_type)]
    return found


def virtualbox_reader_problems(doc: ET.Element) -> list[str]:
    """What VirtualBox's OVF reader would refuse, or what would leave the disk unattached."""
    problems = []
    if doc.tag != f"{OV}Envelope":
        problems.append("root is not an OVF 1.0 Envelope")
    files = {f.get(f"{OV}id"): f for f in doc.findall("ovf:References/ovf:File", NS)}
    disks = {}
    for disk in doc.findall("ovf:DiskSection/ovf:Disk", NS):
        for attr in ("diskId", "format", "capacity"):
            if disk.get(f"{OV}{attr}") is None:
                problems.append(f"Disk without ovf:{attr}")
        if not (disk.get(f"{OV}capacity") or "x").isdigit():
            problems.append("Disk capacity is not a number")
        ref = disk.get(f"{OV}fileRef")
        if ref is not None and (ref not in files or not files[ref].get(f"{OV}href")):
            problems.append(f"Disk fileRef {ref!r} names no File with an href")
        disks[disk.get(f"{OV}diskId")] = disk
    networks = {n.get(f"{OV}name") for n in doc.findall("ovf:NetworkSection/ovf:Network", NS)}
    systems = doc.findall("ovf:VirtualSystem", NS)
    if len(systems) != 1:
        problems.append(f"{len(systems)} VirtualSystems, expected 1")
        return problems
    system = systems[0]
    os_section = system.find("ovf:OperatingSystemSection", NS)
    if os_section is None or not (os_section.get(f"{OV}id") or "").isdigit():
        problems.append("OperatingSystemSection without a numeric ovf:id")
    controllers, ids = {}, []
    for item in items(doc):
        kind, instance = rasd(item, "ResourceType"), rasd(item, "InstanceID")
        if not kind:
            problems.append("Item without ResourceType")
        ids.append(instance)
        if kind in ("5", "6", "20"):
            if not instance or instance == "0":
                problems.append("storage controller without InstanceID")
            if kind == "20" and (rasd(item, "ResourceSubType") or "").lower() != "ahci":
                problems.append("ResourceType 20 other than AHCI")
            controllers[instance] = item
        if kind == "4" and rasd(item, "AllocationUnits") not in ("MegaBytes", "MB", "byte * 2^20"):
            problems.append("memory in units VirtualBox does not read")
        if kind == "10" and rasd(item, "Connection") not in networks:
            problems.append(f"adapter on network {rasd(item, 'Connection')!r} not in the NetworkSection")
    if len(ids) != len(set(ids)):
        problems.append("duplicate InstanceIDs")
    attached = {}
    for item in items(doc):
        if rasd(item, "ResourceType") != "17":
            continue
        if rasd(item, "Parent") not in controllers:
            problems.append(f"disk item's Parent {rasd(item, 'Parent')!r} is no controller")
        disk_id = re.sub(r"^(ovf:/+)?/?disk/", "", rasd(item, "HostResource") or "")
        if disk_id not in disks:
            problems.append(f"disk item's HostResource names no Disk ({disk_id!r})")
        else:
            attached[disk_id] = disks[disk_id]
    problems += _vbox_machine_problems(system, attached)
    return problems


def _vbox_machine_problems(system: ET.Element, attached: dict[str, ET.Element]) -> list[str]:
    """The vbox:Machine section: VirtualBox matches its attached images to DiskSection disks by
    vbox:uuid; the OS types agree."""
    found = system.find("vbox:Machine", NS)
    if found is None:
        return ["no vbox:Machine section"]
    problems = []
    images = {i.get("uuid", "").strip("{}") for i in found.iter(f"{OV}Image")}
    for disk in attached.values():
        if disk.get(f"{V}uuid") not in images:
            problems.append(f"Disk vbox:uuid {disk.get(f'{V}uuid')} is attached nowhere in vbox:Machine")
    os_type = system.find("ovf:OperatingSystemSection/vbox:OSType", NS)
    if os_type is not None and os_type.text != found.get("OSType"):
        problems.append("vbox:OSType differs from vbox:Machine/@OSType")
    return problems


# --- the reference itself -------------------------------------------------------------------------------

def test_the_reference_is_a_real_virtualbox_export_that_the_reader_rules_accept() -> None:
    doc = parse(REFERENCE.read_bytes())
    assert doc.find("ovf:VirtualSystem/vbox:Machine", NS).get("version") == "1.12-linux"
    assert virtualbox_reader_problems(doc) == []


def test_the_reader_rules_catch_broken_references() -> None:
    text = ovf.render(machine())
    broken = {
        b'ovf:fileRef="file1"': b'ovf:fileRef="file9"',
        b"<rasd:Parent>3</rasd:Parent>": b"<rasd:Parent>7</rasd:Parent>",
        b"<rasd:HostResource>/disk/vmdisk1</rasd:HostResource>":
            b"<rasd:HostResource>/disk/x</rasd:HostResource>",
        b'<Image uuid="{': b'<Image uuid="{0',
        b"<rasd:Connection>NAT</rasd:Connection>": b"<rasd:Connection>Bridged</rasd:Connection>",
        b"<rasd:AllocationUnits>MegaBytes": b"<rasd:AllocationUnits>GigaBytes",
    }
    for old, new in broken.items():
        assert old in text
        assert virtualbox_reader_problems(parse(text.replace(old, new))), new


# --- the descriptor ------------------------------------------------------------------------------------

def test_same_machine_gives_the_same_bytes() -> None:
    assert ovf.render(machine()) == ovf.render(machine())
    assert ovf.identity("seed") == ovf.identity("seed")
    assert ovf.render(machine()) != ovf.render(machine(ident=ovf.identity("another image")))


def test_the_descriptor_matches_the_reviewed_golden_file() -> None:
    rendered = ovf.render(machine())
    if os.environ.get("KILN_REGENERATE_GOLDEN"):
        GOLDEN.write_bytes(rendered)
        pytest.skip(f"regenerated {GOLDEN}: review the diff")
    assert rendered == GOLDEN.read_bytes()


def test_identity_comes_from_the_seed_in_virtualbox_formats() -> None:
    one, two = ovf.identity("image-1"), ovf.identity("image-2")
    assert one != two
    for ident in (one, two):
        assert ovf.MAC_RE.fullmatch(ident.mac)
        assert str(uuid.UUID(ident.disk_uuid)) == ident.disk_uuid
        assert ident.disk_uuid != ident.machine_uuid
    assert ovf.mac_colons("080027AABBCC") == "08:00:27:aa:bb:cc"


@pytest.mark.parametrize("cpus,memory,nested,distro", [(1, 768, False, "debian"), (4, 6144, True, "ubuntu"),
                                                       (2, 2048, False, "amzn")])
def test_parameters_reach_both_the_ovf_items_and_the_virtualbox_section(cpus: int, memory: int, nested: bool,
                                                                        distro: str) -> None:
    m = machine(cpus=cpus, memory_mb=memory, nested_hw_virt=nested, os=ovf.os_type(distro))
    doc = parse(ovf.render(m))
    assert rasd(item_of_type(doc, ovf.RT_PROCESSOR), "VirtualQuantity") == str(cpus)
    assert rasd(item_of_type(doc, ovf.RT_MEMORY), "VirtualQuantity") == str(memory)
    os_section = doc.find("ovf:VirtualSystem/ovf:OperatingSystemSection", NS)
    assert os_section.get(f"{OV}id") == str(m.os.cim)
    assert os_section.find("vbox:OSType", NS).text == m.os.vbox
    vbox = doc.find("ovf:VirtualSystem/vbox:Machine", NS)
    assert vbox.get("OSType") == m.os.vbox
    assert vbox.find(f"{OV}Hardware/{OV}CPU").get("count") == str(cpus)
    assert vbox.find(f"{OV}Hardware/{OV}Memory").get("RAMSize") == str(memory)
    nested_el = vbox.find(f"{OV}Hardware/{OV}CPU/{OV}NestedHWVirt")
    assert (nested_el is not None and nested_el.get("enabled") == "true") is nested
    disk = doc.find("ovf:DiskSection/ovf:Disk", NS)
    assert disk.get(f"{OV}capacity") == str(m.disk_capacity)
    assert doc.find("ovf:References/ovf:File", NS).get(f"{OV}size") == str(m.disk_bytes)


def test_os_types_are_virtualbox_ids_with_their_cim_numbers() -> None:
    # CIMOSType_T (VirtualBox ovfreader.h) and the guest OS type ids VirtualBox maps them to.
    assert ovf.os_type("debian") == ovf.OsType("Debian_64", 96)
    assert ovf.os_type("ubuntu") == ovf.OsType("Ubuntu_64", 94)
    assert ovf.os_type("amzn") == ovf.OsType("RedHat_64", 80)
    with pytest.raises(UserError, match="no VirtualBox OS type"):
        ovf.os_type("plan9")


def test_storage_is_one_ahci_controller_holding_the_disk_and_the_nic_an_e1000_on_nat() -> None:
    doc = parse(ovf.render(machine()))
    controller = item_of_type(doc, ovf.RT_OTHER_STORAGE)
    assert rasd(controller, "ResourceSubType") == "AHCI"
    disk = item_of_type(doc, ovf.RT_DISK)
    assert rasd(disk, "Parent") == rasd(controller, "InstanceID")
    nic = item_of_type(doc, ovf.RT_ETHERNET)
    assert (rasd(nic, "ResourceSubType"), rasd(nic, "Connection")) == ("E1000", "NAT")
    vbox = doc.find("ovf:VirtualSystem/vbox:Machine", NS)
    (sata,) = vbox.findall(f"{OV}StorageControllers/{OV}StorageController")
    assert (sata.get("type"), sata.get("name"), sata.get("Bootable")) == ("AHCI", "SATA Controller", "true")
    (adapter,) = vbox.findall(f"{OV}Hardware/{OV}Network/{OV}Adapter")
    assert adapter.get("type") == "82540EM" and adapter.find(f"{OV}NAT") is not None
    assert vbox.find(f"{OV}Hardware/{OV}BIOS/{OV}IOAPIC").get("enabled") == "true"  # needed for >1 CPU
    assert vbox.find(f"{OV}Hardware/{OV}RTC").get("localOrUTC") == "UTC"


def test_the_mac_is_virtualbox_notation_and_the_same_in_ovf_and_vagrantfile() -> None:
    m = machine()
    path = f"ovf:VirtualSystem/vbox:Machine/{OV}Hardware/{OV}Network/{OV}Adapter"
    adapter = parse(ovf.render(m)).find(path, NS)
    assert adapter.get("MACAddress") == m.ident.mac
    assert re.fullmatch(r"080027[0-9A-F]{6}", m.ident.mac)
    assert int(m.ident.mac[:2], 16) & 1 == 0  # unicast
    assert f'config.vm.base_mac = "{m.ident.mac}"' in virtualbox.box_vagrantfile(m.ident.mac, "kiln")
    for bad in ("08:00:27:AA:BB:CC", "080027aabbcc", "525400AABBCC"):
        with pytest.raises(UserError, match="MAC"):
            ovf.render(machine(ident=replace(m.ident, mac=bad)))


def test_invalid_parameters_are_user_errors() -> None:
    for change in ({"cpus": 0}, {"memory_mb": 1}, {"name": "two words"}, {"disk_href": "disk.qcow2"},
                   {"disk_capacity": 0}):
        with pytest.raises(UserError):
            ovf.render(machine(**change))


def test_references_between_file_disk_items_and_vbox_machine_are_consistent() -> None:
    for nested in (True, False):
        assert virtualbox_reader_problems(parse(ovf.render(machine(nested_hw_virt=nested)))) == []
    doc = parse(ovf.render(machine()))
    system = doc.find("ovf:VirtualSystem", NS)
    name = system.get(f"{OV}id")
    assert system.find("ovf:VirtualHardwareSection/ovf:System/vssd:VirtualSystemIdentifier", NS).text == name
    assert system.find("vbox:Machine", NS).get("name") == name
    assert doc.find("ovf:References/ovf:File", NS).get(f"{OV}href") == "box-disk001.vmdk"


# --- schema and shape ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema() -> object:
    from lxml import etree  # a test dependency (pyproject's `test` extra): never skipped

    return etree.XMLSchema(etree.parse(str(SCHEMA)))


def _valid(schema: object, data: bytes) -> list[str]:
    from lxml import etree

    ok = schema.validate(etree.fromstring(data))  # type: ignore[attr-defined]
    return [] if ok else [f"{e.line}: {e.message}" for e in schema.error_log]  # type: ignore[attr-defined]


def test_the_reference_validates_against_dsp8023(schema: object) -> None:
    assert _valid(schema, REFERENCE.read_bytes()) == []


@pytest.mark.parametrize("distro", sorted(ovf.OS_TYPES))
def test_the_descriptor_validates_against_dsp8023(schema: object, distro: str) -> None:
    for nested in (True, False):
        assert _valid(schema, ovf.render(machine(os=ovf.os_type(distro), nested_hw_virt=nested))) == []


def test_the_schema_check_catches_what_dsp8023_forbids(schema: object) -> None:
    good = ovf.render(machine())
    out_of_order = good.replace(b"<rasd:Caption>2 virtual CPU</rasd:Caption>\n        "
                                b"<rasd:Description>Number of virtual CPUs</rasd:Description>",
                                b"<rasd:Description>Number of virtual CPUs</rasd:Description>\n        "
                                b"<rasd:Caption>2 virtual CPU</rasd:Caption>")
    for bad in (out_of_order, good.replace(b'<File ovf:id="file1" ', b"<File "),
                good.replace(b'<VirtualSystem ovf:id="kiln-debian-12">', b"<VirtualSystem>"),
                good.replace(b"<References>", b"<Refs>").replace(b"</References>", b"</Refs>")):
        assert bad != good
        assert _valid(schema, bad), "the schema accepted a broken descriptor"


def _skeleton(node: ET.Element, depth: int) -> list[str]:
    if depth == 0:
        return []
    return [child.tag for child in node] + [t for child in node for t in _skeleton(child, depth - 1)]


def test_sections_and_item_fields_are_those_of_the_virtualbox_export() -> None:
    mine, ref = parse(ovf.render(machine())), parse(REFERENCE.read_bytes())
    assert [c.tag for c in mine] == [c.tag for c in ref]
    system, ref_system = mine.find("ovf:VirtualSystem", NS), ref.find("ovf:VirtualSystem", NS)
    assert [c.tag for c in system] == [c.tag for c in ref_system]
    for path in ("ovf:OperatingSystemSection", "ovf:VirtualHardwareSection/ovf:System"):
        assert [c.tag for c in system.find(path, NS)] == [c.tag for c in ref_system.find(path, NS)]
    assert sorted(int(rasd(i, "ResourceType")) for i in items(mine)) == \
        sorted(int(rasd(i, "ResourceType")) for i in items(ref))
    for item in items(mine):
        twin = item_of_type(ref, int(rasd(item, "ResourceType")))
        assert [c.tag for c in item if not c.tag.endswith("}Address")] == \
            [c.tag for c in twin if not c.tag.endswith("}Address")]
    for path in ("ovf:References/ovf:File", "ovf:DiskSection/ovf:Disk"):
        assert set(mine.find(path, NS).attrib) <= set(ref.find(path, NS).attrib) | {f"{OV}size"}
    vbox, ref_vbox = system.find("vbox:Machine", NS), ref_system.find("vbox:Machine", NS)
    assert {"version", "uuid", "name", "OSType"} <= set(vbox.attrib) & set(ref_vbox.attrib)
    assert set(_skeleton(vbox, 2)) <= set(_skeleton(ref_vbox, 2))


# --- VMDK -----------------------------------------------------------------------------------------------

@pytest.fixture
def small_qcow2(tmp_path: Path) -> Path:
    return make_small_qcow2(tmp_path)


@needs_qemu_img
def test_the_vmdk_is_stream_optimized_and_reproducible(small_qcow2: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "disk.vmdk", tmp_path / "b" / "disk.vmdk"
    one.parent.mkdir()
    two.parent.mkdir()
    info = vmdk.convert(small_qcow2, one, seed="s1")
    vmdk.convert(small_qcow2, two, seed="s1")
    assert one.read_bytes() == two.read_bytes()
    assert info.capacity == 64 << 20
    assert 'createType="streamOptimized"' in info.descriptor
    assert f"CID={vmdk.cid_for('s1')}" in info.descriptor and "parentCID=ffffffff" in info.descriptor
    vmdk.convert(small_qcow2, two, seed="s2")
    diff = [i for i, (a, b) in enumerate(zip(one.read_bytes(), two.read_bytes(), strict=True)) if a != b]
    assert 0 < len(diff) <= 8  # only the CID differs
    check = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "vmdk", str(small_qcow2), str(one)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@needs_qemu_img
def test_a_short_random_cid_from_qemu_is_replaced_whole(small_qcow2: Path, tmp_path: Path) -> None:
    """QEMU prints its random CID without leading zeros: the line's length varies."""
    disk = tmp_path / "disk.vmdk"
    vmdk.convert(small_qcow2, disk, seed="s")
    expected = disk.read_bytes()
    info = vmdk.read_info(disk)
    offset = expected.index(info.descriptor.encode())
    end = offset + len(info.descriptor)
    short = info.descriptor.replace(f"CID={vmdk.cid_for('s')}", "CID=1a").encode()
    disk.write_bytes(expected[:offset] + short.ljust(end - offset, b"\0") + expected[end:])
    assert disk.read_bytes() != expected and len(disk.read_bytes()) == len(expected)
    vmdk.set_cid(disk, vmdk.cid_for("s"))
    assert disk.read_bytes() == expected


def test_set_cid_refuses_what_is_not_a_vmdk(tmp_path: Path) -> None:
    not_vmdk = tmp_path / "x.vmdk"
    not_vmdk.write_bytes(b"QFI\xfb" + bytes(100))
    with pytest.raises(Exception, match="KDMV"):
        vmdk.set_cid(not_vmdk, "0123abcd")
    assert vmdk.cid_for("x") != vmdk.NO_PARENT and re.fullmatch(r"[0-9a-f]{8}", vmdk.cid_for("x"))


# --- the box directory ----------------------------------------------------------------------------------

VERSION = "0.1.0.20261201093000"


SPEC = virtualbox.BoxSpec("debian-12", "debian", "kiln/mesos-debian-12", "kiln", project={"version": "0.1.0"})


@pytest.fixture
def bake(tmp_path: Path, small_qcow2: Path) -> Iterator[Path]:
    artifacts = tmp_path / "artifacts"
    fake_bake(artifacts, small_qcow2, {"base": {"version": "1"}}, version=VERSION)
    yield artifacts


def _members(box: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(box) as tar:
        return {m.name: m for m in tar.getmembers()}


def _member_bytes(box: Path, name: str) -> bytes:
    with tarfile.open(box) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


@needs_qemu_img
def test_the_box_directory_holds_box_catalog_manifest_and_checksummed_metadata(bake: Path) -> None:
    result = virtualbox.make_box(SPEC, bake)
    directory = bake / "debian-12-virtualbox"
    assert result.directory == directory and result.version == VERSION
    assert sorted(p.name for p in directory.iterdir()) == [
        "box-catalog.json", "debian-12-virtualbox.box", "image-manifest.json", "kiln-metadata.json"]
    assert not list(bake.glob(".debian-12-virtualbox.partial*"))
    members = _members(result.box)
    assert list(members) == ["Vagrantfile", "box-disk001.vmdk", "box.ovf", "metadata.json"]
    assert all((m.mtime, m.uid, m.gid, m.mode) == (0, 0, 0, 0o644) for m in members.values())
    assert json.loads(_member_bytes(result.box, "metadata.json")) == {"provider": "virtualbox"}
    meta = json.loads((directory / "kiln-metadata.json").read_text())
    for name in ("debian-12-virtualbox.box", "box-catalog.json", "image-manifest.json"):
        assert meta["artifacts"][name]["sha256"] == sha256_of(directory / name)
    for name, member in members.items():
        data = _member_bytes(result.box, name)
        expected = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": member.size}
        assert meta["box_contents"][name] == expected
    assert meta["made_from"]["sha256"] == sha256_of(bake / "debian-12-qemu" / "debian-12-qemu.box")
    assert meta["made_from"]["box"] == "debian-12-qemu.box"
    assert meta["virtualbox"]["base_mac"] == result.base_mac
    catalog = json.loads((directory / "box-catalog.json").read_text())
    assert catalog == box_catalog("kiln/mesos-debian-12", VERSION, "virtualbox", result.box,
                                  sha256_of(result.box))


@needs_qemu_img
def test_the_ovf_in_the_box_describes_the_vmdk_beside_it(bake: Path) -> None:
    result = virtualbox.make_box(SPEC, bake)
    doc = parse(_member_bytes(result.box, "box.ovf"))
    disk_member = _members(result.box)["box-disk001.vmdk"]
    assert doc.find("ovf:References/ovf:File", NS).get(f"{OV}size") == str(disk_member.size)
    assert doc.find("ovf:DiskSection/ovf:Disk", NS).get(f"{OV}capacity") == str(64 << 20)
    assert virtualbox_reader_problems(doc) == []
    vagrantfile = _member_bytes(result.box, "Vagrantfile").decode()
    assert f'config.vm.base_mac = "{result.base_mac}"' in vagrantfile
    adapter = doc.find(f"ovf:VirtualSystem/vbox:Machine/{OV}Hardware/{OV}Network/{OV}Adapter", NS)
    assert adapter.get("MACAddress") == result.base_mac


@needs_qemu_img
def test_a_rebuild_from_the_same_bake_is_byte_identical(bake: Path, tmp_path: Path) -> None:
    first = virtualbox.make_box(SPEC, bake)
    saved = {p.name: p.read_bytes() for p in first.directory.iterdir()}
    again = virtualbox.make_box(SPEC, bake)
    assert {p.name: p.read_bytes() for p in again.directory.iterdir()} == saved


@needs_qemu_img
def test_nested_virtualization_follows_the_qemu_kvm_component(tmp_path: Path, small_qcow2: Path) -> None:
    def nested(components: dict[str, object], **spec: object) -> bool:
        artifacts = tmp_path / f"a{len(list(tmp_path.iterdir()))}"
        fake_bake(artifacts, small_qcow2, components, version=VERSION)
        result = virtualbox.make_box(replace(SPEC, **spec), artifacts)  # type: ignore[arg-type]
        doc = parse(_member_bytes(result.box, "box.ovf"))
        path = f"ovf:VirtualSystem/vbox:Machine/{OV}Hardware/{OV}CPU/{OV}NestedHWVirt"
        return doc.find(path, NS) is not None

    assert nested({"qemu-kvm": {"version": "7.2"}}) is True
    assert nested({"docker": {"version": "20"}}) is False
    assert nested({"docker": {"version": "20"}}, nested_hw_virt=True) is True


@needs_qemu_img
def test_a_box_that_does_not_match_its_bake_is_refused_and_nothing_is_written(bake: Path) -> None:
    box = bake / "debian-12-qemu" / "debian-12-qemu.box"
    inside = boximage.locate(box)
    with box.open("r+b") as fh:
        fh.seek(inside.offset + inside.size // 2)
        fh.write(b"tampered")
    with pytest.raises(UserError, match="does not match its bake"):
        virtualbox.make_box(SPEC, bake)
    assert sorted(p.name for p in bake.iterdir() if not p.name.endswith(".lock")) == ["debian-12-qemu"]


def test_without_a_finished_bake_the_error_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--builder qemu"):
        virtualbox.make_box(SPEC, tmp_path)
    (tmp_path / "debian-12-qemu").mkdir()
    (tmp_path / "debian-12-qemu" / "debian-12-qemu.box").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="not a finished bake"):
        virtualbox.make_box(SPEC, tmp_path)


@needs_qemu_img
def test_an_interrupted_run_leaves_nothing_and_keeps_the_previous_box(bake: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    previous = virtualbox.make_box(SPEC, bake)
    before = {p.name: p.read_bytes() for p in previous.directory.iterdir()}

    def interrupted(box: Path, members: object) -> None:
        box.write_bytes(b"half a box")
        raise KeyboardInterrupt

    monkeypatch.setattr(virtualbox, "write_box", interrupted)
    with pytest.raises(KeyboardInterrupt):
        virtualbox.make_box(replace(SPEC, cpus=4), bake)
    assert not list(bake.glob(".debian-12-virtualbox.*partial*"))
    assert {p.name: p.read_bytes() for p in previous.directory.iterdir()} == before


@needs_qemu_img
def test_the_trial_finds_the_virtualbox_box_through_its_catalog(tree: Paths, small_qcow2: Path) -> None:
    from kiln.config.load import load_config
    from kiln.vagrant import boxes

    fake_bake(tree.artifacts, small_qcow2, {"zookeeper": {"version": "3.8"}}, version=VERSION)
    config = load_config(tree)
    result = virtualbox.make_box(virtualbox.spec_from_config(config.data, "debian-12"), tree.artifacts)
    box = boxes.resolve(config, tree, "virtualbox")
    assert box == boxes.Box(config["trial"]["box_name"], result.version,
                            (result.directory / "box-catalog.json").as_uri(), True, ("zookeeper",))


@needs_ruby
def test_the_box_vagrantfile_sets_base_mac_user_and_no_synced_folder(tmp_path: Path) -> None:
    """Evaluated by Ruby with a stand-in for Vagrant's config object."""
    vagrantfile = tmp_path / "Vagrantfile"
    vagrantfile.write_text(virtualbox.box_vagrantfile("080027ABCDEF", "kiln"))
    stub = """
require "json"
class Cfg
  attr_reader :seen
  def initialize(seen = {}, path = []) @seen, @path = seen, path end
  def method_missing(name, *args, **kw)
    key = (@path + [name.to_s.chomp("=")]).join(".")
    if name.to_s.end_with?("=") then @seen[key] = args.first
    elsif args.empty? && kw.empty? then Cfg.new(@seen, @path + [name.to_s])
    else @seen[key] = args + (kw.empty? ? [] : [kw]) end
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_version) cfg = Cfg.new; yield cfg; $seen = cfg.seen end
end
load ARGV[0]
puts JSON.generate($seen)
"""
    out = subprocess.run(["ruby", "-e", stub, str(vagrantfile)], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["vm.base_mac"] == "080027ABCDEF"
    assert seen["ssh.username"] == "kiln"
    assert seen["vm.synced_folder"] == [".", "/vagrant", {"disabled": True}]


def test_box_metadata_names_the_provider() -> None:
    assert json.load(io.StringIO(virtualbox.box_metadata())) == {"provider": "virtualbox"}
