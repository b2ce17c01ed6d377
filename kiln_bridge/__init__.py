"""kiln's Marathon -> HAProxy bridge (stdlib only, Python 3.9+), baked into images.

It reads Marathon's apps and tasks (polling, and re-syncing at once on /v2/events), renders
haproxy.cfg with one TCP listener per service port (as the classic haproxy-marathon-bridge
did) and Host-header routing for apps labelled HAPROXY_0_VHOST (as marathon-lb does), checks
the candidate with `haproxy -c`, swaps it in atomically, reloads HAProxy (and checks on the
runtime API socket that a new worker took over), and keeps the last good config otherwise.
The config's global section drops the workers' privileges (user haproxy, chroot) and opens
the runtime API socket; render.GlobalSettings holds those settings.

Modules: model (parse and validate), render, marathon (HTTP client, event stream), apply
(check, swap, reload), runtime (which worker serves), cli (flags, environment, main loop), log.
"""

__version__ = "0.4.0"
