"""The OVF descriptor (box.ovf) of a VirtualBox box, written the way VirtualBox exports one.

An OVF 1.0 envelope (DMTF DSP0243/DSP8023 1.0.0) with the parts VirtualBox's importer
reads (VirtualBox src/VBox/Main/xml/ovfreader.cpp): References/File, DiskSection/Disk with
`vbox:uuid`, a NAT NetworkSection, and one VirtualSystem whose VirtualHardwareSection lists
CPUs, memory, a SATA (AHCI) controller, the disk on that controller and a NAT adapter. After
it, the `vbox:Machine` section VirtualBox itself exports: the machine in VirtualBox's settings
format, which VirtualBox prefers over the generic items when it imports. There the NAT
adapter gets its fixed MAC address (the box's Vagrantfile declares the same one as
`config.vm.base_mac`), the CPU its nested hardware virtualization when asked, and the clock
UTC (VirtualBox defaults to local time).

Modelled on real VirtualBox exports: the box.ovf of tsuru/tsuru-packer (VirtualBox 4.3,
settings 1.12, SATA AHCI + E1000 NAT) and of mtbutler07/nxos-vagrant (VirtualBox 5.0,
settings 1.15); the first is kept as tests/fixtures/virtualbox/reference-tsuru-box.ovf.
Nested virtualization needs settings version 1.17 (VirtualBox 6.0), so that is the version
written. The storage controllers sit beside <Hardware>, as every settings version before
1.19 has them; newer VirtualBox reads those too.

Everything here is a pure function of `Machine`: the same machine gives the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from kiln.errors import UserError

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
SETTINGS_VERSION = "1.17-linux"  # VirtualBox 6.0: the first with NestedHWVirt
VIRTUAL_SYSTEM_TYPE = "virtualbox-2.2"
NAT_NETWORK = "NAT"
SATA_CONTROLLER = "SATA Controller"  # VirtualBox's own name; Vagrant's disk feature looks for it
NIC_TYPE = "82540EM"  # Intel PRO/1000 MT Desktop: VirtualBox's "E1000", QEMU's e1000
VBOX_OUI = "080027"  # the MAC prefix VirtualBox gives its adapters
MAC_RE = re.compile(r"080027[0-9A-F]{6}")  # applied with fullmatch
# uuid5 namespace for the disk and machine UUIDs derived from a box's seed.
KILN_OVF_NAMESPACE = uuid.UUID("6f1c9a52-3c1e-5d0b-9a57-4b696c6e4f56")

# CIM resource types (CIM_ResourceAllocationSettingData.ResourceType) VirtualBox uses.
RT_PROCESSOR, RT_MEMORY, RT_ETHERNET, RT_DISK, RT_OTHER_STORAGE = 3, 4, 10, 17, 20


@dataclass(frozen=True)
class OsType:
    vbox: str  # VirtualBox guest OS type id
    cim: int  # CIM_OperatingSystem.OsType, OVF's OperatingSystemSection/@ovf:id


# By the target's `distro` (config.json). Amazon Linux has no VirtualBox type of its own;
# it descends from Fedora/RHEL, and RedHat_64 gets the same defaults.
OS_TYPES: dict[str, OsType] = {
    "debian": OsType("Debian_64", 96),
    "ubuntu": OsType("Ubuntu_64", 94),
    "amzn": OsType("RedHat_64", 80),
}


def os_type(distro: str) -> OsType:
    try:
        return OS_TYPES[distro]
    except KeyError:
        raise UserError(f"no VirtualBox OS type known for distro {distro!r}",
                        f"add it to kiln.image.ovf.OS_TYPES (known: {', '.join(sorted(OS_TYPES))})") from None


@dataclass(frozen=True)
class Identity:
    """The identifiers of one box, derived from a seed so that a rebuild from the same
    image gives the same descriptor."""

    mac: str  # 12 upper-case hex digits, VirtualBox's notation (and config.vm.base_mac's)
    disk_uuid: str
    machine_uuid: str


def identity(seed: str) -> Identity:
    mac = VBOX_OUI + hashlib.sha256(f"{seed}\0mac".encode()).hexdigest()[:6].upper()
    return Identity(mac, str(uuid.uuid5(KILN_OVF_NAMESPACE, f"{seed}\0disk")),
                    str(uuid.uuid5(KILN_OVF_NAMESPACE, f"{seed}\0machine")))


def mac_colons(mac: str) -> str:
    """080027AABBCC -> 08:00:27:aa:bb:cc (QEMU's and the guest's notation)."""
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2)).lower()


@dataclass(frozen=True)
class Machine:
    name: str  # VirtualSystem id and VirtualBox machine name (Vagrant renames it on import)
    os: OsType
    cpus: int
    memory_mb: int
    disk_href: str  # the VMDK's file name inside the box
    disk_bytes: int  # its size (References/File/@ovf:size)
    disk_capacity: int  # the virtual disk's size in bytes
    ident: Identity
    nested_hw_virt: bool = False

    def check(self) -> None:
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            problems.append(f"machine name {self.name!r}: letters, digits, '.', '_' and '-' only")
        if not 1 <= self.cpus <= 64:
            problems.append(f"cpus {self.cpus}: expected 1 to 64")
        if not 4 <= self.memory_mb <= 1024 * 1024:
            problems.append(f"memory_mb {self.memory_mb}: expected 4 to 1048576")
        if not MAC_RE.fullmatch(self.ident.mac):
            problems.append(f"MAC {self.ident.mac!r}: expected 080027 and 6 upper-case hex digits")
        if "/" in self.disk_href or not self.disk_href.endswith(".vmdk"):
            problems.append(f"disk {self.disk_href!r}: expected a .vmdk file name")
        if self.disk_capacity <= 0 or self.disk_bytes <= 0:
            problems.append("disk capacity and size must be positive")
        if problems:
            raise UserError("cannot describe the VirtualBox machine: " + "; ".join(problems))


# A tiny element tree: (tag, attributes in output order, text or children).
Node = tuple[str, Sequence[tuple[str, str]], "str | Sequence[Node]"]


def _el(tag: str, attrs: Iterable[tuple[str, str | int]] = (), body: str | int | Sequence[Node] = ()) -> Node:
    content: str | Sequence[Node] = str(body) if isinstance(body, (str, int)) else body
    return tag, [(k, str(v)) for k, v in attrs], content


def _serialize(node: Node, depth: int = 0) -> list[str]:
    tag, attrs, body = node
    pad = "  " * depth
    head = tag + "".join(f" {k}={quoteattr(v)}" for k, v in attrs)
    if isinstance(body, str):
        return [f"{pad}<{head}>{escape(body)}</{tag}>"]
    if not body:
        return [f"{pad}<{head}/>"]
    lines = [f"{pad}<{head}>"]
    for child in body:
        lines += _serialize(child, depth + 1)
    return [*lines, f"{pad}</{tag}>"]


def _rasd(fields: Sequence[tuple[str, str | int]]) -> Node:
    """An Item; CIM_ResourceAllocationSettingData wants its elements in alphabetical order."""
    ordered = sorted(fields, key=lambda f: f[0])
    return _el("Item", (), [_el(f"rasd:{name}", (), value) for name, value in ordered])


def _references(m: Machine) -> Node:
    return _el("References", (), [
        _el("File", [("ovf:id", "file1"), ("ovf:href", m.disk_href), ("ovf:size", m.disk_bytes)])])


def _disk_section(m: Machine) -> Node:
    disk = _el("Disk", [("ovf:capacity", m.disk_capacity), ("ovf:diskId", "vmdisk1"),
                        ("ovf:fileRef", "file1"), ("ovf:format", STREAM_OPTIMIZED),
                        ("vbox:uuid", m.ident.disk_uuid)])
    return _el("DiskSection", (), [_el("Info", (), "List of the virtual disks used in the package"), disk])


def _network_section() -> Node:
    network = _el("Network", [("ovf:name", NAT_NETWORK)],
                  [_el("Description", (), "Logical network used by this appliance.")])
    return _el("NetworkSection", (), [_el("Info", (), "Logical networks used in the package"), network])


def _os_section(m: Machine) -> Node:
    return _el("OperatingSystemSection", [("ovf:id", m.os.cim)], [
        _el("Info", (), "The kind of installed guest operating system"),
        _el("Description", (), m.os.vbox),
        _el("vbox:OSType", [("ovf:required", "false")], m.os.vbox),
    ])


def _hardware_items(m: Machine) -> list[Node]:
    cpus = f"{m.cpus} virtual CPU"
    memory = f"{m.memory_mb} MB of memory"
    nic = f"Ethernet adapter on '{NAT_NETWORK}'"
    return [
        _rasd([("Caption", cpus), ("Description", "Number of virtual CPUs"), ("ElementName", cpus),
               ("InstanceID", 1), ("ResourceType", RT_PROCESSOR), ("VirtualQuantity", m.cpus)]),
        _rasd([("AllocationUnits", "MegaBytes"), ("Caption", memory), ("Description", "Memory Size"),
               ("ElementName", memory), ("InstanceID", 2), ("ResourceType", RT_MEMORY),
               ("VirtualQuantity", m.memory_mb)]),
        _rasd([("Address", 0), ("Caption", "sataController0"), ("Description", "SATA Controller"),
               ("ElementName", "sataController0"), ("InstanceID", 3), ("ResourceSubType", "AHCI"),
               ("ResourceType", RT_OTHER_STORAGE)]),
        _rasd([("AddressOnParent", 0), ("Caption", "disk1"), ("Description", "Disk Image"),
               ("ElementName", "disk1"), ("HostResource", "/disk/vmdisk1"), ("InstanceID", 4),
               ("Parent", 3), ("ResourceType", RT_DISK)]),
        _rasd([("AutomaticAllocation", "true"), ("Caption", nic), ("Connection", NAT_NETWORK),
               ("ElementName", nic), ("InstanceID", 5), ("ResourceSubType", "E1000"),
               ("ResourceType", RT_ETHERNET)]),
    ]


def _hardware_section(m: Machine) -> Node:
    system = _el("System", (), [
        _el("vssd:ElementName", (), "Virtual Hardware Family"),
        _el("vssd:InstanceID", (), 0),
        _el("vssd:VirtualSystemIdentifier", (), m.name),
        _el("vssd:VirtualSystemType", (), VIRTUAL_SYSTEM_TYPE),
    ])
    info = _el("Info", (), "Virtual hardware requirements for a virtual machine")
    return _el("VirtualHardwareSection", (), [info, system, *_hardware_items(m)])


def _enabled(tag: str, on: bool) -> Node:
    return _el(tag, [("enabled", "true" if on else "false")])


def _vbox_hardware(m: Machine) -> Node:
    cpu = [_enabled("PAE", True), _enabled("LongMode", True), _enabled("X2APIC", True),
           _enabled("HardwareVirtExLargePages", False)]
    if m.nested_hw_virt:
        cpu.append(_enabled("NestedHWVirt", True))
    boot = [_el("Order", [("position", 1), ("device", "HardDisk")])]
    boot += [_el("Order", [("position", n), ("device", "None")]) for n in (2, 3, 4)]
    adapter = _el("Adapter", [("slot", 0), ("enabled", "true"), ("MACAddress", m.ident.mac),
                              ("cable", "true"), ("type", NIC_TYPE)], [_el("NAT")])
    return _el("Hardware", (), [
        _el("CPU", [("count", m.cpus)], cpu),
        _el("Memory", [("RAMSize", m.memory_mb)]),
        _el("Boot", (), boot),
        _el("BIOS", (), [_enabled("IOAPIC", True)]),
        _el("Network", (), [adapter]),
        _el("AudioAdapter", [("enabled", "false")]),
        _el("RTC", [("localOrUTC", "UTC")]),
    ])


def _vbox_machine(m: Machine) -> Node:
    controller = _el("StorageController", [("name", SATA_CONTROLLER), ("type", "AHCI"), ("PortCount", 1),
                                           ("useHostIOCache", "false"), ("Bootable", "true")], [
        _el("AttachedDevice", [("type", "HardDisk"), ("hotpluggable", "false"), ("port", 0), ("device", 0)],
            [_el("Image", [("uuid", "{" + m.ident.disk_uuid + "}")])]),
    ])
    attrs = [("ovf:required", "false"), ("version", SETTINGS_VERSION),
             ("uuid", "{" + m.ident.machine_uuid + "}"), ("name", m.name), ("OSType", m.os.vbox),
             ("snapshotFolder", "Snapshots")]
    return _el("vbox:Machine", attrs, [
        _el("ovf:Info", (), "Complete VirtualBox machine configuration in VirtualBox format"),
        _vbox_hardware(m),
        _el("StorageControllers", (), [controller]),
    ])


def render(machine: Machine) -> bytes:
    """box.ovf for `machine`, UTF-8, newline-terminated."""
    machine.check()
    namespaces = [("ovf:version", "1.0"), ("xml:lang", "en-US"), ("xmlns", OVF_NS), ("xmlns:ovf", OVF_NS),
                  ("xmlns:rasd", RASD_NS), ("xmlns:vssd", VSSD_NS), ("xmlns:xsi", XSI_NS),
                  ("xmlns:vbox", VBOX_NS)]
    system = _el("VirtualSystem", [("ovf:id", machine.name)], [
        _el("Info", (), "A virtual machine"),
        _os_section(machine),
        _hardware_section(machine),
        _vbox_machine(machine),
    ])
    envelope = _el("Envelope", namespaces,
                   [_references(machine), _disk_section(machine), _network_section(), system])
    return ("\n".join(['<?xml version="1.0"?>', *_serialize(envelope)]) + "\n").encode("utf-8")
