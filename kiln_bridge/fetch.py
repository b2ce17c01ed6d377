"""HTTP GETs with bounds, for answers the bridge does not trust.

An answer may be anything: no HTTP at all, a body that never ends or arrives a byte at a time,
more data than memory holds. `get` waits at most `timeout` for each read and 3 x `timeout` for
the whole body, reads at most MAX_BODY bytes, and turns every failure into one of two
exceptions with a one-line message: Unavailable (nothing usable came back: refused, timed out,
HTTP error status, broken HTTP) or BadResponse (an answer came, but it is not acceptable).
Redirects are followed only when asked to; otherwise a 3xx comes back as an Answer. Proxy
settings in the environment are ignored: Marathon and the Mesos masters are cluster members.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Any, NamedTuple, Optional

from kiln_bridge.model import BadResponse, show

MAX_BODY = 64 * 1024 * 1024
CHUNK = 64 * 1024
_LENGTH_RE = re.compile(r"[0-9]{1,20}")


class Unavailable(OSError):
    """Nothing usable answered (refused, timed out, an HTTP error status, broken HTTP)."""


class HTTPStatus(Unavailable):
    """An HTTP error status (4xx, 5xx) with the start of its body."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__("HTTP %d %s" % (status, show(detail)))
        self.status, self.detail = status, detail


class Waiting(Unavailable):
    """The source answered, but says its view is not complete yet (keep the current config)."""


class Answer(NamedTuple):
    status: int
    body: bytes
    location: Optional[str]  # the Location header of a redirect


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None  # urllib then raises HTTPError carrying the 3xx and its Location


_PLAIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def open_url(request: urllib.request.Request, timeout: float) -> Any:
    """urlopen without proxies from the environment (a stream the caller reads itself)."""
    return _PLAIN.open(request, timeout=timeout)


def _read(resp: Any, max_body: int, deadline: float, timeout: float) -> bytes:
    length = resp.headers.get("Content-Length")
    if length is not None and _LENGTH_RE.fullmatch(length.strip()) and int(length) > max_body:
        raise BadResponse("answer of %s bytes is larger than the limit of %d bytes"
                          % (length.strip(), max_body))
    chunks = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise Unavailable("answer not complete after %gs (%d bytes so far)" % (3 * timeout, total))
        chunk = resp.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_body:
            raise BadResponse("answer larger than the limit of %d bytes" % max_body)
        chunks.append(chunk)
    missing = getattr(resp, "length", None)
    if missing:
        raise BadResponse("answer ended after %d bytes, %d short of its Content-Length" % (total, missing))
    return b"".join(chunks)


def get(url: str, timeout: float, follow_redirects: bool = True, max_body: int = MAX_BODY,
        data: Optional[bytes] = None) -> Answer:
    """GET `url` (POST `data` as JSON when given)."""
    deadline = time.monotonic() + 3 * timeout
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    opener = _PLAIN if follow_redirects else _NO_REDIRECT
    try:
        try:
            with opener.open(request, timeout=timeout) as resp:
                return Answer(resp.status, _read(resp, max_body, deadline, timeout), None)
        except urllib.error.HTTPError as exc:
            with exc:
                if 300 <= exc.code < 400 and not follow_redirects:
                    return Answer(exc.code, b"", exc.headers.get("Location"))
                detail = exc.read(200).decode("utf-8", "replace")
            raise HTTPStatus(exc.code, detail) from None
    except (BadResponse, Unavailable):
        raise
    except urllib.error.URLError as exc:
        raise Unavailable(str(exc.reason)) from None
    except socket.timeout:
        raise Unavailable("no answer within %gs" % timeout) from None
    except http.client.HTTPException as exc:
        raise Unavailable("not a valid HTTP answer (%s: %s)" % (type(exc).__name__, show(str(exc)))) from None
    except (OSError, ValueError) as exc:
        raise Unavailable("%s: %s" % (type(exc).__name__, show(str(exc)))) from None
