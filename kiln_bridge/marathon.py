"""Marathon's HTTP API: the apps with their tasks, and the /v2/events stream that says when to look again."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from kiln_bridge.log import log
from kiln_bridge.model import App, BadResponse, parse_body

APPS_PATH = "/v2/apps?embed=apps.tasks"
EVENTS_PATH = "/v2/events"
# Events after which the routing table may differ. Marathon versions that understand event_type
# filters send only these; older ones send everything and the rest is ignored here.
SYNC_EVENTS = (
    "api_post_event",
    "app_terminated_event",
    "deployment_success",
    "health_status_changed_event",
    "instance_changed_event",
    "instance_health_changed_event",
    "status_update_event",
)
ATTACHED = "event_stream_attached"
MAX_BODY = 64 * 1024 * 1024


class Unavailable(OSError):
    """No Marathon answered at all (refused, timed out, HTTP error)."""


def _get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        body = resp.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise BadResponse("answer larger than %d bytes" % MAX_BODY)
    return body


def fetch_apps(urls: Sequence[str], timeout: float = 10.0) -> List[App]:
    """Apps from the first Marathon that gives a valid answer.

    BadResponse when some Marathon answered but none validly; Unavailable when none answered.
    """
    problems = []
    answered = False
    for base in urls:
        try:
            return parse_body(_get(base.rstrip("/") + APPS_PATH, timeout))
        except BadResponse as exc:
            answered = True
            problems.append("%s: %s" % (base, exc))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problems.append("%s: %s" % (base, getattr(exc, "reason", None) or exc))
    summary = "; ".join(problems) or "no Marathon URL configured"
    raise BadResponse(summary) if answered else Unavailable(summary)


def read_events(lines: Iterable[bytes]) -> Iterator[Tuple[str, str]]:
    """(event name, data) pairs of a text/event-stream; Marathon names each event."""
    name = ""
    data: List[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if name or data:
                yield name or "message", "\n".join(data)
            name = ""
            data = []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def event_type(name: str, data: str) -> str:
    """The SSE event name, or the eventType inside the JSON for streams that send unnamed events."""
    if name != "message":
        return name
    try:
        parsed = json.loads(data)
    except ValueError:
        return name
    kind = parsed.get("eventType") if isinstance(parsed, dict) else None
    return kind if isinstance(kind, str) else name


def events_url(base: str) -> str:
    query = "&".join("event_type=" + kind for kind in (ATTACHED, *SYNC_EVENTS))
    return base.rstrip("/") + EVENTS_PATH + "?" + query


class EventFollower:
    """Follows the first Marathon event stream that accepts us and sets `wake` on relevant events.

    Runs in a daemon thread; polling goes on regardless, so a missing or broken stream only
    costs latency. Logs when the stream comes and goes, not on every retry.
    """

    def __init__(self, urls: Sequence[str], wake: threading.Event, stop: threading.Event,
                 idle_timeout: float = 300.0, retry_seconds: float = 10.0) -> None:
        self.urls = list(urls)
        self.wake, self.stop = wake, stop
        self.idle_timeout, self.retry_seconds = idle_timeout, retry_seconds
        self._announced: Optional[str] = None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="marathon-events", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        while not self.stop.is_set():
            problems = []
            for base in self.urls:
                try:
                    self._follow(base)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    problems.append("%s: %s" % (base, getattr(exc, "reason", None) or exc))
                if self.stop.is_set():
                    return
            self._announce("event stream unavailable, polling only (%s)" % "; ".join(problems))
            self.stop.wait(self.retry_seconds)

    def _announce(self, message: str) -> None:
        if message != self._announced:
            log(message)
            self._announced = message

    def _follow(self, base: str) -> None:
        request = urllib.request.Request(events_url(base), headers={"Accept": "text/event-stream"})
        with urllib.request.urlopen(request, timeout=self.idle_timeout) as resp:
            kind = resp.headers.get("Content-Type", "")
            if not kind.startswith("text/event-stream"):
                raise ValueError("answered %r, not text/event-stream" % kind)
            self._announce("following Marathon's event stream at %s" % base)
            # Whatever changed while no stream was attached is picked up by one sync now.
            self.wake.set()
            for name, data in read_events(iter(resp.readline, b"")):
                if self.stop.is_set():
                    return
                if event_type(name, data) in SYNC_EVENTS:
                    self.wake.set()
        raise ValueError("event stream closed")
