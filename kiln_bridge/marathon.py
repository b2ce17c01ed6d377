"""Marathon's HTTP API: the apps with their tasks, and the /v2/events stream that says when to look again.

The event stream only wakes the poll loop up; whatever it carries is never trusted beyond
that. Its lines and events are bounded (MAX_EVENT_LINE, MAX_EVENT_BYTES), and a stream that
breaks them, or breaks in any other way, is dropped and attached again later.
"""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from kiln_bridge.fetch import Unavailable, get, open_url
from kiln_bridge.log import log
from kiln_bridge.model import BadResponse, Routes, load_json, parse_marathon, show

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
MAX_EVENT_LINE = 1024 * 1024
MAX_EVENT_BYTES = 4 * 1024 * 1024


def fetch_apps(urls: Sequence[str], timeout: float = 10.0) -> Routes:
    """The routes of the first Marathon that gives a valid answer.

    BadResponse when some Marathon answered but none validly; Unavailable when none answered.
    """
    problems = []
    answered = False
    for base in urls:
        try:
            answer = get(base.rstrip("/") + APPS_PATH, timeout)
            return parse_marathon(load_json(answer.body))
        except BadResponse as exc:
            answered = True
            problems.append("%s: %s" % (base, exc))
        except Unavailable as exc:
            problems.append("%s: %s" % (base, exc))
    summary = "; ".join(problems) or "no Marathon URL configured"
    raise BadResponse(summary) if answered else Unavailable(summary)


class MarathonSource:
    """Routing from Marathon's apps, with its event stream to learn about changes early."""

    name = "Marathon"
    answer = "Marathon's answer"

    def __init__(self, urls: Sequence[str], timeout: float = 10.0) -> None:
        self.urls = list(urls)
        self.timeout = timeout

    def describe(self) -> str:
        return "marathon %s" % ",".join(self.urls)

    def fetch(self) -> Routes:
        return fetch_apps(self.urls, self.timeout)

    def follow(self, wake: threading.Event, stop: threading.Event, retry_seconds: float) -> None:
        EventFollower(self.urls, wake, stop, retry_seconds=retry_seconds).start()


def read_events(lines: Iterable[bytes]) -> Iterator[Tuple[str, str]]:
    """(event name, data) pairs of a text/event-stream; Marathon names each event."""
    name = ""
    data: List[str] = []
    size = 0
    for raw in lines:
        if len(raw) > MAX_EVENT_LINE:
            raise ValueError("event stream line longer than %d bytes" % MAX_EVENT_LINE)
        size += len(raw)
        if size > MAX_EVENT_BYTES:
            raise ValueError("event longer than %d bytes" % MAX_EVENT_BYTES)
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            size = 0
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
        parsed = load_json(data.encode("utf-8", "replace"))
    except BadResponse:
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
                except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                    problems.append("%s: %s" % (base, getattr(exc, "reason", None) or exc))
                except Exception as exc:  # the thread must live on whatever a stream sends
                    problems.append("%s: %s: %s" % (base, type(exc).__name__, show(str(exc))))
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
        with open_url(request, self.idle_timeout) as resp:
            kind = resp.headers.get("Content-Type", "")
            if not kind.startswith("text/event-stream"):
                raise ValueError("answered %r, not text/event-stream" % kind)
            self._announce("following Marathon's event stream at %s" % base)
            # Whatever changed while no stream was attached is picked up by one sync now.
            self.wake.set()
            for name, data in read_events(iter(lambda: resp.readline(MAX_EVENT_LINE + 1), b"")):
                if self.stop.is_set():
                    return
                if event_type(name, data) in SYNC_EVENTS:
                    self.wake.set()
        raise ValueError("event stream closed")
