"""haproxy.cfg from the routes of Marathon's apps or Mesos' tasks: same routes in, same bytes out.

Two kinds of routing:
- one TCP `listen` per service port (what the classic haproxy-marathon-bridge wrote), and
- one HTTP frontend on the vhost port choosing a backend by Host header, for apps labelled
  HAPROXY_0_VHOST (the marathon-lb convention); it always exists, so unknown hosts get a 503
  instead of a refused connection.

Whatever the model accepts renders a config `haproxy -c` accepts: names and addresses are
checked there; here, two tasks at one address give one server (haproxy refuses a server name
twice in a backend), and an app's host names are spread over several `acl` lines (haproxy
reads at most 64 words per line).
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Sequence

from kiln_bridge.model import App, BadResponse

COMMENT = "# Written by kiln-haproxy-bridge; local edits are overwritten."
# Host names per `acl` line: with the other words of the line, well below haproxy's 64.
HOSTS_PER_ACL = 50
DEFAULTS_SECTION = """\
defaults
  log global
  option dontlognull
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  # An agent name that does not resolve disables that one server instead of failing the config.
  default-server init-addr libc,none
"""


class GlobalSettings(NamedTuple):
    """The `global` section. The defaults are what the image runs with (Debian's haproxy package
    provides user haproxy, /var/lib/haproxy and /run/haproxy); None leaves a line out, e.g. for a
    haproxy started without root, which can neither switch user nor chroot."""

    user: Optional[str] = "haproxy"
    group: Optional[str] = "haproxy"
    chroot: Optional[str] = "/var/lib/haproxy"
    stats_socket: Optional[str] = "/run/haproxy/admin.sock"
    log: Optional[str] = "/dev/log"
    maxconn: int = 4096

    def directories(self) -> List[str]:
        """Directories haproxy needs at start and reload but `haproxy -c` does not look for."""
        dirs = [self.chroot] if self.chroot else []
        if self.stats_socket:
            dirs.append(os.path.dirname(self.stats_socket) or ".")
        return dirs


IMAGE_DEFAULTS = GlobalSettings()


def _global_section(settings: GlobalSettings) -> List[str]:
    out = ["global", "  maxconn %d" % settings.maxconn]
    if settings.user:
        out.append("  user %s" % settings.user)
    if settings.group:
        out.append("  group %s" % settings.group)
    if settings.chroot:
        # Workers are confined once listeners and the stats socket are open; Debian's
        # haproxy.service bind-mounts /dev/log into /var/lib/haproxy so they can still log.
        out.append("  chroot %s" % settings.chroot)
    if settings.stats_socket:
        # The runtime API (show info, disable server...). expose-fd listeners lets a reload that
        # runs outside the master (haproxy -x SOCKET -sf PID) take the listening sockets over.
        out += ["  stats socket %s mode 660 level admin expose-fd listeners" % settings.stats_socket,
                "  stats timeout 30s"]
    if settings.log:
        # notice and up: servers going down or up, not one line per connection.
        out.append("  log %s local0 notice" % settings.log)
    return out


def _address(bind: str, port: int) -> str:
    return "%s:%d" % (bind, port)


def _servers(app: App, port_index: int) -> List[str]:
    lines: List[str] = []
    seen = set()
    for task in app.tasks:  # sorted by address
        if len(task.ports) > port_index and task.ports[port_index]:
            target = "%s:%d" % (task.host, task.ports[port_index])
            if target not in seen:
                seen.add(target)
                lines.append("  server %s %s check" % (target, target))
    return lines


def _vhost_section(apps: Sequence[App], vhost_port: int, bind: str) -> List[str]:
    routed = [app for app in apps if app.vhosts]
    out = ["", "frontend vhosts", "  bind %s" % _address(bind, vhost_port), "  mode http",
           "  timeout http-request 10s"]
    for app in routed:
        # Several lines defining one acl name match when any of them does.
        for start in range(0, len(app.vhosts), HOSTS_PER_ACL):
            hosts = " ".join(app.vhosts[start:start + HOSTS_PER_ACL])
            out.append("  acl vhost_%s hdr(host),field(1,:) -i %s" % (app.name, hosts))
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


def render(apps: Sequence[App], vhost_port: int = 80, bind: str = "0.0.0.0",
           settings: GlobalSettings = IMAGE_DEFAULTS) -> str:
    """The complete haproxy.cfg; BadResponse when an app's service port is the vhost port."""
    ordered = sorted(apps)
    for app in ordered:
        if any(port == vhost_port for _, port in app.service_ports):
            raise BadResponse("service port %d of %s is the vhost port" % (vhost_port, app.app_id))
    lines = _vhost_section(ordered, vhost_port, bind) + _listeners(ordered, bind)
    head = [COMMENT, *_global_section(settings), ""]
    return "\n".join(head) + "\n" + DEFAULTS_SECTION + "\n".join(lines) + "\n"
