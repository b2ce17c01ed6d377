"""kiln-haproxy-bridge: keep haproxy.cfg in step with Marathon's apps or the Mesos tasks.

  run      poll the source (and follow Marathon's event stream), check, swap in and reload the config
  render   print the config for a JSON document: Marathon's /v2/apps?embed=apps.tasks, or a Mesos
           master's /master/state with --source mesos

Two sources (--source, KILN_BRIDGE_SOURCE):
  marathon  Marathon's apps and their service ports (the default)
  mesos     the leading Mesos master's state, whatever framework runs the tasks; a task is routed
            when a label HAPROXY_<n>_PORT=<service port> asks for its n-th port to be (see
            kiln_bridge/mesos.py for the rule); polled, as Mesos has no event stream to follow

Flags left out fall back to the environment. Under systemd that is /etc/default/kiln-haproxy-bridge
(bake-time defaults from config.json's components.haproxy), then /etc/kiln/haproxy-bridge.env
(written by kiln-node at boot; its values win):
  KILN_BRIDGE_SOURCE (marathon or mesos), KILN_BRIDGE_MARATHON_URLS and KILN_BRIDGE_MESOS_URLS
  (comma separated), KILN_BRIDGE_POLL_SECONDS, KILN_BRIDGE_TIMEOUT_SECONDS, KILN_BRIDGE_VHOST_PORT,
and for haproxy.cfg's `global` section (`none` leaves the line out):
  KILN_BRIDGE_HAPROXY_USER, KILN_BRIDGE_HAPROXY_GROUP     workers' user and group (default haproxy)
  KILN_BRIDGE_HAPROXY_CHROOT                             workers' chroot (default /var/lib/haproxy)
  KILN_BRIDGE_HAPROXY_STATS_SOCKET                       runtime API socket (/run/haproxy/admin.sock)
  KILN_BRIDGE_HAPROXY_LOG                                syslog target (default /dev/log)

The bridge is a daemon: no answer from a source makes it exit. An answer it cannot use is
logged in one line and the last good config stays.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import signal
import sys
import threading
import traceback
import urllib.parse
from typing import Any, Callable, FrozenSet, List, Mapping, Optional, Sequence, TypeVar, Union

from kiln_bridge.apply import APPLIED, UNCHANGED, Applier
from kiln_bridge.fetch import Unavailable, Waiting
from kiln_bridge.log import log
from kiln_bridge.marathon import MarathonSource
from kiln_bridge.mesos import MesosSource, parse_state
from kiln_bridge.model import BadResponse, Routes, load_json, parse_marathon
from kiln_bridge.render import IMAGE_DEFAULTS, GlobalSettings, render

DEFAULT_POLL, DEFAULT_VHOST_PORT, DEFAULT_TIMEOUT = 5.0, 80, 10.0
SOURCES = ("marathon", "mesos")
# Events come in bursts (one per task of a deployment): gather them into one sync.
SETTLE_SECONDS = 0.5
T = TypeVar("T")
# Says "leave this line out of the global section" for the settings that may be left out.
NONE = "none"
# Everything below lands as one token on a haproxy.cfg line: no white space, quotes or '#'.
# Always matched whole (fullmatch): with `$`, "haproxy\n" would pass.
NAME_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
PATH_RE = re.compile(r"/[A-Za-z0-9._@+/-]*")
LOG_TARGET_RE = re.compile(r"[A-Za-z0-9._@:/\[\]-]+")
PORT_RE = re.compile(r"[0-9]{1,5}")
SECONDS_RE = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
URL_RE = re.compile(r"https?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?")

Source = Union[MarathonSource, MesosSource]


class UsageError(ValueError):
    pass


def _url_list(what: str) -> Callable[[str], List[str]]:
    def convert(text: str) -> List[str]:
        urls = [u.strip() for u in text.split(",") if u.strip()]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise UsageError("%s URL %r must start with http:// or https://" % (what, url))
            if URL_RE.fullmatch(url) is None or not urllib.parse.urlsplit(url).hostname:
                raise UsageError("%s URL %r is not a plain http(s)://host[:port][/path] URL" % (what, url))
        return urls
    return convert


def _seconds(text: str) -> float:
    if SECONDS_RE.fullmatch(text) is None:
        raise ValueError("not a number of seconds")
    value = float(text)
    if not (math.isfinite(value) and 0.1 <= value <= 86400):
        raise ValueError("out of range")
    return value


def _port(text: str) -> int:
    if PORT_RE.fullmatch(text) is None or not 1 <= int(text) <= 65535:
        raise ValueError("out of range")
    return int(text)


def _address(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _source(text: str) -> str:
    if text not in SOURCES:
        raise ValueError("not one of %s" % ", ".join(SOURCES))
    return text


def _matching(pattern: re.Pattern[str]) -> Callable[[str], Optional[str]]:
    def convert(text: str) -> Optional[str]:
        if text == NONE:
            return None
        if not pattern.fullmatch(text):
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
    run = sub.add_parser("run", help="keep haproxy.cfg in step with Marathon or Mesos")
    run.add_argument("--marathon", metavar="URL,URL", help="Marathon base URLs, tried in turn "
                     "(env KILN_BRIDGE_MARATHON_URLS)")
    run.add_argument("--mesos", metavar="URL,URL", help="Mesos master base URLs, e.g. "
                     "http://MASTER:PORT (kiln-node writes them); any master will do, the bridge "
                     "finds the leader without following redirects (env KILN_BRIDGE_MESOS_URLS)")
    run.add_argument("--config", default="/etc/haproxy/haproxy.cfg")
    run.add_argument("--haproxy", default="/usr/sbin/haproxy", help="binary used for `haproxy -c`")
    run.add_argument("--poll", metavar="SECONDS", help="poll interval (env KILN_BRIDGE_POLL_SECONDS, "
                     "default %g)" % DEFAULT_POLL)
    run.add_argument("--timeout", metavar="SECONDS", help="wait this long for each read from the source, "
                     "three times as long for a whole body (env KILN_BRIDGE_TIMEOUT_SECONDS, default %g)"
                     % DEFAULT_TIMEOUT)
    run.add_argument("--reload-cmd", default="systemctl reload haproxy",
                     help="graceful reload run after each new config ('' for none)")
    run.add_argument("--once", action="store_true", help="sync once and exit (1 if nothing usable)")
    show = sub.add_parser("render", help="print the config for a Marathon apps or Mesos state JSON file")
    show.add_argument("--from-file", required=True, metavar="JSON")
    for command in (run, show):
        command.add_argument("--source", metavar="{marathon,mesos}", help="where routing comes from: "
                             "Marathon's apps, or the tasks in the leading Mesos master's state "
                             "(env KILN_BRIDGE_SOURCE, default marathon)")
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


def make_source(args: argparse.Namespace) -> Source:
    timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT
    if getattr(args, "source", "marathon") == "mesos":
        return MesosSource(args.mesos, timeout, reserved_ports=(args.vhost_port,))
    return MarathonSource(args.marathon, timeout)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return "%s:%d" % (os.path.basename(frames[-1].filename), frames[-1].lineno) if frames else "?"


# An answer with thousands of bad tasks logs this many of them, then how many more were left out.
MAX_DROPPED_LOGGED = 20


def log_dropped(notes: Sequence[str]) -> None:
    for note in notes[:MAX_DROPPED_LOGGED]:
        log(note)
    if len(notes) > MAX_DROPPED_LOGGED:
        log("... and %d more tasks left out (not logged one by one)" % (len(notes) - MAX_DROPPED_LOGGED))


class Syncer:
    """One source -> haproxy.cfg round. Logs a repeated problem once, not every poll, and each
    task left out once while it stays out."""

    def __init__(self, args: argparse.Namespace, source: Optional[Source] = None) -> None:
        self.args = args
        self.source = source or make_source(args)
        self.applier = Applier(args.config, args.haproxy, args.reload_cmd, args.settings.directories(),
                               stats_socket=args.settings.stats_socket)
        self.last_problem: Optional[str] = None
        self.dropped: FrozenSet[str] = frozenset()

    def _problem(self, message: str) -> str:
        if message != self.last_problem:
            log(message)
        self.last_problem = message
        return "kept"

    def _report_dropped(self, routes: Routes) -> None:
        log_dropped([note for note in routes.dropped if note not in self.dropped])
        self.dropped = frozenset(routes.dropped)

    def sync(self) -> str:
        try:
            return self._sync()
        except Exception as exc:  # a daemon: nothing a source sends may end it
            return self._problem("unexpected %s at %s, keeping the current config: %s"
                                 % (type(exc).__name__, _where(exc), exc))

    def _sync(self) -> str:
        a, source = self.args, self.source
        try:
            routes = source.fetch()
            text = render(routes.apps, a.vhost_port, a.bind_address, a.settings)
        except Waiting as exc:
            return self._problem("keeping the current config: %s" % exc)
        except Unavailable as exc:
            return self._problem("no %s reachable, keeping the current config: %s" % (source.name, exc))
        except BadResponse as exc:
            return self._problem("rejected %s, keeping the current config: %s" % (source.answer, exc))
        self._report_dropped(routes)
        try:
            result = self.applier.apply(text)
        except OSError as exc:
            return self._problem("cannot write next to %s, keeping the current config: %s" % (a.config, exc))
        self.last_problem = None
        return result


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    syncer = Syncer(args)
    log("starting: %s, config %s, poll %gs, vhost port %d" % (
        syncer.source.describe(), args.config, args.poll, args.vhost_port))
    if args.once:
        return 0 if syncer.sync() in (APPLIED, UNCHANGED) else 1
    wake = threading.Event()
    syncer.source.follow(wake, stop, max(args.poll, 5.0))
    while not stop.is_set():
        syncer.sync()
        if wake.wait(args.poll):
            stop.wait(SETTLE_SECONDS)
        wake.clear()
    return 0


def render_file(args: argparse.Namespace) -> int:
    try:
        with open(args.from_file, "rb") as fh:
            document: Any = load_json(fh.read())
        if args.source == "mesos":
            routes = parse_state(document, reserved_ports=(args.vhost_port,))
        else:
            routes = parse_marathon(document)
        text = render(routes.apps, args.vhost_port, args.bind_address, args.settings)
    except (OSError, BadResponse) as exc:
        log("cannot render %s: %s" % (args.from_file, exc))
        return 2
    log_dropped(routes.dropped)
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
    args.source = _setting(args.source, env, "KILN_BRIDGE_SOURCE", _source, "marathon", "source")
    args.vhost_port = _setting(args.vhost_port, env, "KILN_BRIDGE_VHOST_PORT", _port, DEFAULT_VHOST_PORT,
                               "vhost-port")
    args.bind_address = _setting(args.bind_address, {}, "", _address, "0.0.0.0", "bind-address")
    args.settings = _global_settings(args, env)
    if args.command != "run":
        return
    args.poll = _setting(args.poll, env, "KILN_BRIDGE_POLL_SECONDS", _seconds, DEFAULT_POLL, "poll")
    args.timeout = _setting(args.timeout, env, "KILN_BRIDGE_TIMEOUT_SECONDS", _seconds, DEFAULT_TIMEOUT,
                            "timeout")
    args.marathon = _setting(args.marathon, env, "KILN_BRIDGE_MARATHON_URLS", _url_list("Marathon"), [],
                             "marathon")
    args.mesos = _setting(args.mesos, env, "KILN_BRIDGE_MESOS_URLS", _url_list("Mesos master"), [], "mesos")
    if args.source == "marathon" and not args.marathon:
        raise UsageError("no Marathon URL: pass --marathon or set KILN_BRIDGE_MARATHON_URLS")
    if args.source == "mesos" and not args.mesos:
        raise UsageError("no Mesos master URL: pass --mesos or set KILN_BRIDGE_MESOS_URLS "
                         "(the source is mesos)")


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
