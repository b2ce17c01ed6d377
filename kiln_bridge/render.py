"""haproxy.cfg from parsed Marathon apps: same apps in, same bytes out.

Two kinds of routing:
- one TCP `listen` per service port (what the classic haproxy-marathon-bridge wrote), and
- one HTTP frontend on the vhost port choosing a backend by Host header, for apps labelled
  HAPROXY_0_VHOST (the marathon-lb convention); it always exists, so unknown hosts get a 503
  instead of a refused connection.
"""

from __future__ import annotations

from typing import List, Sequence

from kiln_bridge.model import App, BadResponse

HEADER = """\
# Written by kiln-haproxy-bridge from Marathon's apps; local edits are overwritten.
global
  maxconn 4096

defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  # An agent name that does not resolve disables that one server instead of failing the config.
  default-server init-addr libc,none
"""


def _address(bind: str, port: int) -> str:
    return "%s:%d" % (bind, port)


def _servers(app: App, port_index: int) -> List[str]:
    lines = []
    for task in app.tasks:
        if len(task.ports) > port_index:
            target = "%s:%d" % (task.host, task.ports[port_index])
            lines.append("  server %s %s check" % (target, target))
    return lines


def _vhost_section(apps: Sequence[App], vhost_port: int, bind: str) -> List[str]:
    routed = [app for app in apps if app.vhosts]
    out = ["", "frontend vhosts", "  bind %s" % _address(bind, vhost_port), "  mode http",
           "  timeout http-request 10s"]
    for app in routed:
        out.append("  acl vhost_%s hdr(host),field(1,:) -i %s" % (app.name, " ".join(app.vhosts)))
        out.append("  use_backend vhost_%s if vhost_%s" % (app.name, app.name))
    for app in routed:
        out += ["", "backend vhost_%s" % app.name, "  mode http", "  balance roundrobin",
                "  option forwardfor"]
        out += _servers(app, 0)
    return out


def _listeners(apps: Sequence[App], bind: str) -> List[str]:
    out: List[str] = []
    for app in apps:
        for index, port in app.service_ports:
            out += ["", "listen tcp_%s_%d" % (app.name, port), "  bind %s" % _address(bind, port),
                    "  mode tcp", "  balance leastconn"]
            out += _servers(app, index)
    return out


def render(apps: Sequence[App], vhost_port: int = 80, bind: str = "0.0.0.0") -> str:
    """The complete haproxy.cfg; BadResponse when an app's service port is the vhost port."""
    ordered = sorted(apps)
    for app in ordered:
        if any(port == vhost_port for _, port in app.service_ports):
            raise BadResponse("service port %d of %s is the vhost port" % (vhost_port, app.app_id))
    lines = _vhost_section(ordered, vhost_port, bind) + _listeners(ordered, bind)
    return HEADER + "\n".join(lines) + "\n"
