"""kiln-haproxy-bridge: keep haproxy.cfg in step with Marathon's apps.

  run      poll Marathon (and follow its event stream), check, swap in and reload the config
  render   print the config for an apps JSON document (Marathon's /v2/apps?embed=apps.tasks)

Flags left out fall back to the environment. Under systemd that is /etc/default/kiln-haproxy-bridge
(bake-time defaults from config.json's components.haproxy), then /etc/kiln/haproxy-bridge.env
(written by kiln-node at boot; its values win):
  KILN_BRIDGE_MARATHON_URLS (comma separated), KILN_BRIDGE_POLL_SECONDS, KILN_BRIDGE_VHOST_PORT,
and for haproxy.cfg's `global` section (`none` leaves the line out):
  KILN_BRIDGE_HAPROXY_USER, KILN_BRIDGE_HAPROXY_GROUP     workers' user and group (default haproxy)
  KILN_BRIDGE_HAPROXY_CHROOT                             workers' chroot (default /var/lib/haproxy)
  KILN_BRIDGE_HAPROXY_STATS_SOCKET                       runtime API socket (/run/haproxy/admin.sock)
  KILN_BRIDGE_HAPROXY_LOG                                syslog target (default /dev/log)
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import signal
import sys
import threading
from typing import Callable, List, Mapping, Optional, Sequence, TypeVar

from kiln_bridge.apply import APPLIED, UNCHANGED, Applier
from kiln_bridge.log import log
from kiln_bridge.marathon import EventFollower, Unavailable, fetch_apps
from kiln_bridge.model import BadResponse, parse_body
from kiln_bridge.render import IMAGE_DEFAULTS, GlobalSettings, render

DEFAULT_POLL, DEFAULT_VHOST_PORT = 5.0, 80
# Events come in bursts (one per task of a deployment): gather them into one sync.
SETTLE_SECONDS = 0.5
T = TypeVar("T")
# Says "leave this line out of the global section" for the settings that may be left out.
NONE = "none"
# Everything below lands as one token on a haproxy.cfg line: no white space, quotes or '#'.
NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._@+/-]*$")
LOG_TARGET_RE = re.compile(r"^[A-Za-z0-9._@:/\[\]-]+$")


class UsageError(ValueError):
    pass


def _urls(text: str) -> List[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise UsageError("Marathon URL %r must start with http:// or https://" % url)
    return urls


def _poll(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 86400:
        raise ValueError("out of range")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("out of range")
    return value


def _address(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _matching(pattern: re.Pattern[str]) -> Callable[[str], Optional[str]]:
    def convert(text: str) -> Optional[str]:
        if text == NONE:
            return None
        if not pattern.match(text):
            raise ValueError("not a single haproxy.cfg token of the expected form")
        return text
    return convert


def _setting(flag: Optional[str], env: Mapping[str, str], var: str, convert: Callable[[str], T],
             default: T, what: str) -> T:
    text = flag if flag is not None else env.get(var, "").strip()
    if not text:
        return default
    try:
        return convert(text)
    except UsageError:
        raise
    except ValueError:
        source = "--" + what if flag is not None else var
        raise UsageError("%s=%r is not a valid %s" % (source, text, what.replace("-", " "))) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiln-haproxy-bridge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{run,render}")
    sub.required = True
    run = sub.add_parser("run", help="keep haproxy.cfg in step with Marathon")
    run.add_argument("--marathon", metavar="URL,URL", help="Marathon base URLs, tried in turn "
                     "(env KILN_BRIDGE_MARATHON_URLS)")
    run.add_argument("--config", default="/etc/haproxy/haproxy.cfg")
    run.add_argument("--haproxy", default="/usr/sbin/haproxy", help="binary used for `haproxy -c`")
    run.add_argument("--poll", metavar="SECONDS", help="poll interval (env KILN_BRIDGE_POLL_SECONDS, "
                     "default %g)" % DEFAULT_POLL)
    run.add_argument("--reload-cmd", default="systemctl reload haproxy",
                     help="graceful reload run after each new config ('' for none)")
    run.add_argument("--once", action="store_true", help="sync once and exit (1 if nothing usable)")
    show = sub.add_parser("render", help="print the config for an apps JSON file")
    show.add_argument("--from-file", required=True, metavar="APPS_JSON")
    for command in (run, show):
        command.add_argument("--vhost-port", help="Host-header routing port (env KILN_BRIDGE_VHOST_PORT, "
                             "default %d)" % DEFAULT_VHOST_PORT)
        command.add_argument("--bind-address", default="0.0.0.0", help="address every listener binds")
        d = IMAGE_DEFAULTS
        command.add_argument("--haproxy-user", metavar="NAME", help="user haproxy's workers run as "
                             "(env KILN_BRIDGE_HAPROXY_USER, default %s, none: the user haproxy "
                             "starts as)" % d.user)
        command.add_argument("--haproxy-group", metavar="NAME", help="their group "
                             "(env KILN_BRIDGE_HAPROXY_GROUP, default %s)" % d.group)
        command.add_argument("--chroot", metavar="DIR", help="directory the workers are confined to "
                             "(env KILN_BRIDGE_HAPROXY_CHROOT, default %s)" % d.chroot)
        command.add_argument("--stats-socket", metavar="PATH", help="runtime API socket "
                             "(env KILN_BRIDGE_HAPROXY_STATS_SOCKET, default %s)" % d.stats_socket)
        command.add_argument("--log-target", metavar="TARGET", help="syslog socket or address "
                             "(env KILN_BRIDGE_HAPROXY_LOG, default %s)" % d.log)
    return p


class Syncer:
    """One Marathon -> haproxy.cfg round; logs a repeated problem once, not every poll."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.applier = Applier(args.config, args.haproxy, args.reload_cmd, args.settings.directories(),
                               stats_socket=args.settings.stats_socket)
        self.last_problem: Optional[str] = None

    def _problem(self, message: str) -> None:
        if message != self.last_problem:
            log(message)
        self.last_problem = message

    def sync(self) -> str:
        a = self.args
        try:
            text = render(fetch_apps(a.marathon), a.vhost_port, a.bind_address, a.settings)
        except Unavailable as exc:
            self._problem("no Marathon reachable, keeping the current config: %s" % exc)
            return "kept"
        except BadResponse as exc:
            self._problem("rejected Marathon's answer, keeping the current config: %s" % exc)
            return "kept"
        try:
            result = self.applier.apply(text)
        except OSError as exc:
            self._problem("cannot write next to %s, keeping the current config: %s" % (a.config, exc))
            return "kept"
        self.last_problem = None
        return result


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    log("starting: marathon %s, config %s, poll %gs, vhost port %d" % (
        ",".join(args.marathon), args.config, args.poll, args.vhost_port))
    syncer = Syncer(args)
    if args.once:
        return 0 if syncer.sync() in (APPLIED, UNCHANGED) else 1
    wake = threading.Event()
    EventFollower(args.marathon, wake, stop, retry_seconds=max(args.poll, 5.0)).start()
    while not stop.is_set():
        syncer.sync()
        if wake.wait(args.poll):
            stop.wait(SETTLE_SECONDS)
        wake.clear()
    return 0


def render_file(args: argparse.Namespace) -> int:
    try:
        with open(args.from_file, "rb") as fh:
            text = render(parse_body(fh.read()), args.vhost_port, args.bind_address, args.settings)
    except (OSError, BadResponse) as exc:
        log("cannot render %s: %s" % (args.from_file, exc))
        return 2
    sys.stdout.write(text)
    return 0


def _global_settings(args: argparse.Namespace, env: Mapping[str, str]) -> GlobalSettings:
    d = IMAGE_DEFAULTS
    name, path, target = _matching(NAME_RE), _matching(PATH_RE), _matching(LOG_TARGET_RE)
    return d._replace(
        user=_setting(args.haproxy_user, env, "KILN_BRIDGE_HAPROXY_USER", name, d.user, "haproxy-user"),
        group=_setting(args.haproxy_group, env, "KILN_BRIDGE_HAPROXY_GROUP", name, d.group, "haproxy-group"),
        chroot=_setting(args.chroot, env, "KILN_BRIDGE_HAPROXY_CHROOT", path, d.chroot, "chroot"),
        stats_socket=_setting(args.stats_socket, env, "KILN_BRIDGE_HAPROXY_STATS_SOCKET", path,
                              d.stats_socket, "stats-socket"),
        log=_setting(args.log_target, env, "KILN_BRIDGE_HAPROXY_LOG", target, d.log, "log-target"),
    )


def _resolve(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    args.vhost_port = _setting(args.vhost_port, env, "KILN_BRIDGE_VHOST_PORT", _port, DEFAULT_VHOST_PORT,
                               "vhost-port")
    args.bind_address = _setting(args.bind_address, {}, "", _address, "0.0.0.0", "bind-address")
    args.settings = _global_settings(args, env)
    if args.command == "run":
        args.poll = _setting(args.poll, env, "KILN_BRIDGE_POLL_SECONDS", _poll, DEFAULT_POLL, "poll")
        args.marathon = _setting(args.marathon, env, "KILN_BRIDGE_MARATHON_URLS", _urls, [], "marathon")
        if not args.marathon:
            raise UsageError("no Marathon URL: pass --marathon or set KILN_BRIDGE_MARATHON_URLS")


def main(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        _resolve(args, os.environ if env is None else env)
    except UsageError as exc:
        log(str(exc))
        return 2
    if args.command == "render":
        return render_file(args)
    stop = threading.Event()
    # systemd stops us with SIGTERM: unwind normally so no temp file is left next to the config.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return run(args, stop)
    except KeyboardInterrupt:
        return 130
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
