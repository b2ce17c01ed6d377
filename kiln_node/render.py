"""The text of every config file a node spec implies (pure functions, no I/O).

Choices worth knowing:
- A standalone node runs ZooKeeper in standalone mode: zoo.cfg has no server.N lines and no
  myid is written (ZooKeeper reads myid only in replicated mode). Masters always get
  server.N lines and myid, even a single master, so growing the ensemble changes nothing else.
- Mesos and Marathon advertise the node's IP as their hostname: links in the Mesos UI and
  Marathon's leader redirects then work from a workstation that knows no cluster names.
- options.work_dir is the root of Mesos state: the master keeps <work_dir>/master, the agent
  <work_dir>/agent, so a standalone node's two daemons never share a directory.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from kiln_node import catalog as catalogmod
from kiln_node import spec as specmod

HOSTS = "/etc/hosts"
BEGIN = "# BEGIN kiln"
END = "# END kiln"
HEADER = "# Written by kiln-node from the node spec; edits are overwritten at the next apply."

ZOO_CFG = "/etc/zookeeper/conf/zoo.cfg"
MYID = "/var/lib/zookeeper/myid"
MESOS_ZK = "/etc/mesos/zk"
MARATHON_ENV = "/etc/kiln/marathon.env"
BRIDGE_ENV = "/etc/kiln/haproxy-bridge.env"
RANCHER_ENV = "/etc/kiln/rancher.env"

Files = Dict[str, Tuple[str, int]]


class HostsError(Exception):
    pass


def render(spec: Dict[str, Any], catalog: Dict[str, Any], present: Optional[Sequence[str]] = None) -> Files:
    """path -> (content, mode) for every file this node's role needs, /etc/hosts excepted; ports
    come from the image's component catalog. `present`: the components the image holds (None:
    unknown, all)."""
    role = spec["role"]
    options = specmod.options_of(spec)
    files: Files = {}
    servers = role in ("standalone", "master")
    if servers:
        files[ZOO_CFG] = (zoo_cfg(spec, catalog), 0o644)
        if role == "master":
            files[MYID] = ("{}\n".format(int(spec["node_id"])), 0o644)
    files[MESOS_ZK] = ("zk://{}/mesos\n".format(zk_hosts(spec, catalog)), 0o644)
    if servers:
        files.update(_flags("/etc/mesos-master", {
            "quorum": str(specmod.quorum(spec)),
            "ip": spec["ip"],
            "hostname": spec["ip"],
            "work_dir": options["work_dir"].rstrip("/") + "/master",
            "cluster": spec["cluster"],
        }))
    if role in ("standalone", "agent"):
        agent = options["agent"]
        files.update(_flags("/etc/mesos-agent", {
            "ip": spec["ip"],
            "hostname": spec["ip"],
            "work_dir": options["work_dir"].rstrip("/") + "/agent",
            "containerizers": options["containerizers"],
            "executor_registration_timeout": options["executor_registration_timeout"],
            "attributes": mesos_pairs(agent["attributes"]),
            "resources": mesos_pairs(agent["resources"]),
        }))
    if servers and options["marathon"]:
        files[MARATHON_ENV] = (marathon_env(spec, catalog), 0o644)
    if servers and options["haproxy"]:
        marathon = bool(options["marathon"]) and (present is None or "marathon" in present)
        files[BRIDGE_ENV] = (bridge_env(spec, catalog, marathon), 0o644)
    if specmod.rancher_configured(options):
        files[RANCHER_ENV] = (rancher_env(spec, options["rancher"], catalog), 0o600)
    return files


def owned(path: str) -> bool:
    """Whether `path` is a file kiln-node writes whole (and may therefore remove)."""
    return path in (ZOO_CFG, MYID, MESOS_ZK, MARATHON_ENV, BRIDGE_ENV, RANCHER_ENV) or (
        path.startswith(("/etc/mesos-master/", "/etc/mesos-agent/")) and "/.." not in path)


def zk_hosts(spec: Dict[str, Any], catalog: Dict[str, Any]) -> str:
    """Every master's ZooKeeper client address, comma separated (a ZooKeeper connect string)."""
    client = catalogmod.port(catalog, "zookeeper", "client")
    return ",".join("{}:{}".format(m, client) for m in spec["masters"])


def zoo_cfg(spec: Dict[str, Any], catalog: Dict[str, Any]) -> str:
    ports = {n: catalogmod.port(catalog, "zookeeper", n) for n in ("client", "peer", "election")}
    lines = [
        HEADER,
        "tickTime=2000",
        "initLimit=10",
        "syncLimit=5",
        "dataDir=/var/lib/zookeeper",
        "clientPort={}".format(ports["client"]),
        "4lw.commands.whitelist=ruok,stat,mntr,srvr",
        # Its admin server would take the port Marathon listens on.
        "admin.enableServer=false",
    ]
    if spec["role"] == "master":
        lines += ["server.{}={}:{}:{}".format(i, ip, ports["peer"], ports["election"])
                  for i, ip in enumerate(spec["masters"], 1)]
    return "\n".join(lines) + "\n"


def _flags(directory: str, values: Dict[str, str]) -> Files:
    """Mesos reads one flag per file (file name = flag, content = value); empty flags are left out."""
    return {"{}/{}".format(directory, k): (v + "\n", 0o644) for k, v in values.items() if v}


def mesos_pairs(values: Dict[str, Any]) -> str:
    """{'rack': 'r1', 'zone': 'a'} -> 'rack:r1;zone:a' (sorted, so the text is stable)."""
    return ";".join("{}:{}".format(k, values[k]) for k in sorted(values))


def _env(lines: List[Tuple[str, str]], comment: str) -> str:
    # spec.schema.json keeps these values free of white space, quotes, '\', '$' and '`', so
    # they need no quoting in a systemd EnvironmentFile.
    return "\n".join([HEADER, "# " + comment] + ["{}={}".format(k, v) for k, v in lines]) + "\n"


def marathon_env(spec: Dict[str, Any], catalog: Dict[str, Any]) -> str:
    hosts = zk_hosts(spec, catalog)
    return _env([
        ("MARATHON_MASTER", "zk://{}/mesos".format(hosts)),
        ("MARATHON_ZK", "zk://{}/marathon".format(hosts)),
        ("MARATHON_HOSTNAME", spec["ip"]),
        ("MARATHON_HTTP_PORT", str(catalogmod.port(catalog, "marathon", "http"))),
        # The leading master calls Marathon's scheduler back: on the cluster address (not the
        # NAT interface a Vagrant machine also has) and on a fixed port a firewall can open.
        ("LIBPROCESS_IP", spec["ip"]),
        ("LIBPROCESS_PORT", str(catalogmod.port(catalog, "marathon", "scheduler"))),
    ], "environment of marathon.service")


def bridge_env(spec: Dict[str, Any], catalog: Dict[str, Any], marathon: bool = True) -> str:
    """The bridge routes what Marathon runs when the node runs Marathon, else what the leading Mesos
    master's /state shows (tasks of any framework)."""
    source, port_name = ("marathon", "http") if marathon else ("mesos", "master")
    port = catalogmod.port(catalog, source, port_name)
    urls = ",".join("http://{}:{}".format(m, port) for m in spec["masters"])
    return _env([("KILN_BRIDGE_SOURCE", source), ("KILN_BRIDGE_{}_URLS".format(source.upper()), urls)],
                "environment of kiln-haproxy-bridge.service")


def rancher_env(spec: Dict[str, Any], rancher: Dict[str, str], catalog: Dict[str, Any]) -> str:
    return _env([
        ("CATTLE_URL", rancher["cattle_url"]),
        ("CATTLE_ACCESS_KEY", rancher["access_key"]),
        ("CATTLE_SECRET_KEY", rancher["secret_key"]),
        ("MESOS_MASTER", "zk://{}/mesos".format(zk_hosts(spec, catalog))),
        ("IP_CIDR", rancher.get("ip_cidr", "")),
    ], "environment of the rancher-mesos-* services (secrets: mode 0600)")


def hosts_block(spec: Dict[str, Any]) -> List[str]:
    """One line per address: masters are m1..mN (as the host side names them), plus this node."""
    names: Dict[str, List[str]] = {}
    if spec["role"] != "standalone":
        for i, ip in enumerate(spec["masters"], 1):
            names.setdefault(ip, []).append("m{}".format(i))
    own = names.setdefault(spec["ip"], [])
    if spec["name"] not in own:
        own.append(spec["name"])
    lines = ["{} {}".format(ip, " ".join(n)) for ip, n in names.items()]
    return [BEGIN, "# managed by kiln-node: lines between these markers are overwritten", *lines, END]


def merge_hosts(existing: str, block: List[str]) -> str:
    """`existing` with its kiln block replaced by `block` (appended when there is none)."""
    lines = existing.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) > 1 or len(ends) > 1 or len(starts) != len(ends) or (starts and ends[0] < starts[0]):
        raise HostsError("{} has unbalanced '{}' / '{}' lines: fix or remove them by hand".format(
            HOSTS, BEGIN, END))
    if starts:
        lines[starts[0]:ends[0] + 1] = block
    else:
        lines += block
    return "\n".join(lines) + "\n"
