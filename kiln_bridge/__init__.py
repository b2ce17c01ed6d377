"""kiln's Marathon / Mesos -> HAProxy bridge (stdlib only, Python 3.9+), baked into images.

It reads what to route from one of two sources: Marathon's apps and tasks (polling, and
re-syncing at once on /v2/events), or the tasks in the leading Mesos master's state (polling;
a task asks for a listener with a HAPROXY_<n>_PORT label, see mesos.py). It renders haproxy.cfg
with one TCP listener per service port (as the classic haproxy-marathon-bridge did) and
Host-header routing for apps labelled HAPROXY_0_VHOST (as marathon-lb does), checks the
candidate with `haproxy -c`, swaps it in atomically, reloads HAProxy (and checks on the runtime
API socket that a new worker took over), and keeps the last good config otherwise. The
config's global section drops the workers' privileges (user haproxy, chroot) and opens the
runtime API socket; render.GlobalSettings holds those settings.

It is a daemon and its sources are not trusted: no answer makes it exit. An answer it cannot use
costs one log line and keeps the last good config; a malformed task costs that task only.

Modules: model (routes, Marathon's apps, safe JSON), mesos (the master's state, the leader),
fetch (bounded HTTP), marathon (apps, event stream), render, apply (check, swap, reload),
runtime (which worker serves), cli (flags, environment, main loop), log (one safe line).
"""

__version__ = "0.5.0"
