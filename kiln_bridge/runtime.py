"""HAProxy's runtime API (the stats socket), for the one thing the bridge asks it: which worker
is serving. A reload that HAProxy's master could not carry out (a config that `haproxy -c`
passed but that fails at run time, e.g. a port another program holds) leaves the old worker
serving while `systemctl reload` has already reported success; a new worker PID is the proof
that the new config is live.
"""

from __future__ import annotations

import socket
import time
from typing import Optional

ASK_TIMEOUT = 2.0


def worker_pid(path: str, timeout: float = ASK_TIMEOUT) -> Optional[int]:
    """The PID in `show info`, or None when nothing answers on the socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(b"show info\n")
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return None
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(": ")
        if key == "Pid" and value.strip().isdigit():
            return int(value.strip())
    return None


def wait_new_worker(path: str, old: int, seconds: float, interval: float = 0.2) -> Optional[int]:
    """The PID of a worker other than `old` once one answers within `seconds`, else None."""
    deadline = time.monotonic() + seconds
    while True:
        pid = worker_pid(path)
        if pid is not None and pid != old:
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
