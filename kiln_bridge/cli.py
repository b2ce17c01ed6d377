"""kiln-haproxy-bridge: keep haproxy.cfg in step with Marathon's apps.

  run      poll Marathon (and follow its event stream), check, swap in and reload the config
  render   print the config for an apps JSON document (Marathon's /v2/apps?embed=apps.tasks)

Flags left out fall back to the environment (/etc/kiln/haproxy-bridge.env under systemd):
KILN_BRIDGE_MARATHON_URLS (comma separated), KILN_BRIDGE_POLL_SECONDS, KILN_BRIDGE_VHOST_PORT.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from typing import Callable, List, Mapping, Optional, Sequence, TypeVar

from kiln_bridge.apply import APPLIED, UNCHANGED, Applier
from kiln_bridge.log import log
from kiln_bridge.marathon import EventFollower, Unavailable, fetch_apps
from kiln_bridge.model import BadResponse, parse_body
from kiln_bridge.render import render

DEFAULT_POLL, DEFAULT_VHOST_PORT = 5.0, 80
# Events come in bursts (one per task of a deployment): gather them into one sync.
SETTLE_SECONDS = 0.5
T = TypeVar("T")


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
    return p


class Syncer:
    """One Marathon -> haproxy.cfg round; logs a repeated problem once, not every poll."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.applier = Applier(args.config, args.haproxy, args.reload_cmd)
        self.last_problem: Optional[str] = None

    def _problem(self, message: str) -> None:
        if message != self.last_problem:
            log(message)
        self.last_problem = message

    def sync(self) -> str:
        a = self.args
        try:
            text = render(fetch_apps(a.marathon), a.vhost_port, a.bind_address)
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
            text = render(parse_body(fh.read()), args.vhost_port, args.bind_address)
    except (OSError, BadResponse) as exc:
        log("cannot render %s: %s" % (args.from_file, exc))
        return 2
    sys.stdout.write(text)
    return 0


def _resolve(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    args.vhost_port = _setting(args.vhost_port, env, "KILN_BRIDGE_VHOST_PORT", _port, DEFAULT_VHOST_PORT,
                               "vhost-port")
    args.bind_address = _setting(args.bind_address, {}, "", _address, "0.0.0.0", "bind-address")
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
