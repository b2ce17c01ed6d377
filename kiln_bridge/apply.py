"""Put a rendered config in place only after `haproxy -c` accepts it, then reload HAProxy.

The live config is only ever replaced whole (os.replace of a checked file in the same
directory), so HAProxy never sees a half-written or rejected config; `<config>.last-good`
holds a copy of the last config that passed the check and went live.

`haproxy -c` does not look for the directories the global section names (the chroot, the stats
socket's directory), yet a missing one makes the reload fail at run time; the old workers would
go on serving while the file on disk could no longer start haproxy. Those directories are
checked first, and a config is only put in place once they exist.

A reload command that succeeds does not prove HAProxy loaded the config (`systemctl reload`
only signals the master). With a stats socket, the worker that answers on it must change;
if the old one keeps serving, the reload counts as failed and is retried next round.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from typing import List, Optional, Sequence, Tuple

from kiln_bridge import runtime
from kiln_bridge.log import log, one_line

UNCHANGED, APPLIED, REJECTED, RELOAD_FAILED = "unchanged", "applied", "rejected", "reload-failed"
NOT_READY = "not-ready"
COMMAND_TIMEOUT = 60.0
NEW_WORKER_SECONDS = 15.0


def _run(argv: List[str]) -> Tuple[int, str]:
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=COMMAND_TIMEOUT, check=False)
    except OSError as exc:
        return 127, "cannot run %s: %s" % (argv[0], exc)
    except subprocess.TimeoutExpired:
        return 124, "%s did not finish within %ds" % (argv[0], COMMAND_TIMEOUT)
    return done.returncode, done.stdout


def _haproxy_problem(output: str) -> str:
    """haproxy -c's ALERT lines (the reasons), without the NOTICE chatter around them."""
    lines = [line for line in output.splitlines() if "ALERT" in line or "error" in line.lower()]
    return one_line("\n".join(lines or output.splitlines()[-3:])) or "no output"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def _write_temp(directory: str, base: str, text: str, mode: int) -> str:
    fd, path = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, mode)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _mode_of(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o644


class Applier:
    """Remembers a reload that failed, so the next round retries it even if the config is unchanged,
    and the last config haproxy rejected, so the same one is neither checked nor logged again.
    `directories` must exist before a new config goes in (see the module docstring); with a
    `stats_socket`, a reload only counts once a new worker answers there."""

    def __init__(self, config: str, haproxy: str = "/usr/sbin/haproxy",
                 reload_cmd: str = "systemctl reload haproxy", directories: Sequence[str] = (),
                 stats_socket: Optional[str] = None, new_worker_seconds: float = NEW_WORKER_SECONDS) -> None:
        self.config = os.path.abspath(config)
        self.haproxy = haproxy
        self.reload_cmd = reload_cmd
        self.directories = list(directories)
        self.stats_socket = stats_socket
        self.new_worker_seconds = new_worker_seconds
        self.reload_pending = False
        self.rejected: Optional[str] = None
        self._missing: List[str] = []

    def apply(self, text: str) -> str:
        if _read(self.config) == text:
            return self._reload() if self.reload_pending else UNCHANGED
        if text == self.rejected:
            return REJECTED
        if not self._directories_exist():
            return NOT_READY
        directory, base = os.path.split(self.config)
        candidate = _write_temp(directory, base, text, _mode_of(self.config))
        try:
            code, output = _run([self.haproxy, "-c", "-f", candidate])
            if code != 0:
                log("haproxy -c rejected the new config, keeping %s: %s" % (self.config,
                                                                            _haproxy_problem(output)))
                self.rejected = text
                return REJECTED
            os.replace(candidate, self.config)
        finally:
            if os.path.exists(candidate):
                os.unlink(candidate)
        self._keep_last_good(directory, base, text)
        log("wrote %s" % self.config)
        self.reload_pending = True
        return self._reload()

    def _directories_exist(self) -> bool:
        # Not remembered like a rejected config: the directory may appear (haproxy.service creates
        # /run/haproxy when it starts), so every round looks again, but logs a change only.
        missing = [d for d in self.directories if not os.path.isdir(d)]
        if missing and missing != self._missing:
            log("missing %s, keeping %s: haproxy could not start or reload with the new config"
                % (" and ".join(missing), self.config))
        self._missing = missing
        return not missing

    def _keep_last_good(self, directory: str, base: str, text: str) -> None:
        copy = _write_temp(directory, base, text, 0o644)
        os.replace(copy, self.config + ".last-good")

    def _reload(self) -> str:
        if not self.reload_cmd.strip():
            self.reload_pending = False
            return APPLIED
        serving = runtime.worker_pid(self.stats_socket) if self.stats_socket else None
        code, output = _run(shlex.split(self.reload_cmd))
        if code != 0:
            log("reload command %r failed (exit %d), will retry: %s" % (self.reload_cmd, code,
                                                                        one_line(output) or "no output"))
            return RELOAD_FAILED
        replaced = ""
        if serving is not None and self.stats_socket:
            new = runtime.wait_new_worker(self.stats_socket, serving, self.new_worker_seconds)
            if new is None:
                log("haproxy did not load the new config: worker %d still serves %.0f s after %r "
                    "(haproxy's own log says why, e.g. a port held by another program); will retry"
                    % (serving, self.new_worker_seconds, self.reload_cmd))
                return RELOAD_FAILED
            replaced = ": worker %d replaced %d" % (new, serving)
        log("reloaded haproxy (%s)%s" % (self.reload_cmd, replaced))
        self.reload_pending = False
        return APPLIED
