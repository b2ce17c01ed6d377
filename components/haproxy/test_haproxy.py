"""HAProxy and kiln's Marathon bridge."""

from __future__ import annotations

from kiln_infra import boot_only, for_roles, require, unit_enabled, wait_until

DEFAULTS = "/etc/default/kiln-haproxy-bridge"
BOOT_ENV = "/etc/kiln/haproxy-bridge.env"
# One runtime API command on the socket the bridge's haproxy.cfg opens (images carry no socat).
STATS = ("sudo python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); "
         "s.connect(\"/run/haproxy/admin.sock\"); s.sendall(b\"%s\\n\"); "
         "[sys.stdout.write(c.decode()) for c in iter(lambda: s.recv(65536), b\"\")]'")


def test_haproxy_and_bridge_installed(host, components, phase) -> None:
    require(components, "haproxy")
    assert host.package("haproxy").is_installed  # /usr/sbin is not on a user's PATH
    assert host.file("/usr/local/sbin/kiln-haproxy-bridge").mode & 0o111
    assert host.file("/etc/systemd/system/kiln-haproxy-bridge.service").exists
    assert host.run("PYTHONPATH=/opt/kiln/lib python3 -m kiln_bridge --help").rc == 0
    if phase == "bake":
        assert not unit_enabled(host, "haproxy")
        assert not unit_enabled(host, "kiln-haproxy-bridge")


def test_routes_by_host_header_to_a_backend(host, components, phase, role) -> None:
    """Boot phase: the bridge renders a vhost config, haproxy -c accepts it, and a real
    HAProxy in the guest routes by Host header to a guest-local HTTP backend."""
    require(components, "haproxy")
    boot_only(phase)
    for_roles(role, "standalone", "master")
    script = r"""
set -e
d=$(mktemp -d)
mkdir -p $d/www && echo kiln-backend-ok > $d/www/index.html
cat > $d/apps.json <<'JSON'
{"apps": [{"id": "/hello", "ports": [18090], "labels": {"HAPROXY_0_VHOST": "hello.kiln.test"},
  "tasks": [{"host": "127.0.0.1", "ports": [18089], "state": "TASK_RUNNING"}]}]}
JSON
cd $d/www && (python3 -m http.server 18089 --bind 127.0.0.1 >/dev/null 2>&1 & echo $! > $d/web.pid)
PYTHONPATH=/opt/kiln/lib python3 -m kiln_bridge render --from-file $d/apps.json \
  --vhost-port 18088 --bind-address 127.0.0.1 > $d/haproxy.cfg
sudo haproxy -c -f $d/haproxy.cfg >/dev/null
sudo haproxy -D -p $d/haproxy.pid -f $d/haproxy.cfg
ok=""
for i in $(seq 30); do
  out=$(curl -s -H 'Host: hello.kiln.test' http://127.0.0.1:18088/ || true)
  if [ "$out" = kiln-backend-ok ]; then ok=1; break; fi
  sleep 0.5
done
other=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: other.kiln.test' http://127.0.0.1:18088/ || true)
sudo kill $(cat $d/haproxy.pid) $(cat $d/web.pid) || true
rm -rf $d
echo "vhost=${ok:-no} other=$other"
"""
    out = host.run(script)
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "vhost=1 other=503"


def test_bridge_defaults_hold_the_configured_values(host, components) -> None:
    """Bake phase (and still true at boot: only kiln-node's own file changes then): config.json's
    components.haproxy, as recorded in the manifest, is what the bridge's unit reads first."""
    record = require(components, "haproxy")
    assert "vhost_port" in record and "poll_seconds" in record, \
        "the manifest records no vhost_port/poll_seconds: baked before provision/haproxy.sh wrote them"
    defaults = host.file(DEFAULTS)
    assert defaults.exists and defaults.user == "root" and defaults.mode == 0o644
    lines = defaults.content_string.splitlines()
    assert f"KILN_BRIDGE_VHOST_PORT={record['vhost_port']}" in lines
    assert f"KILN_BRIDGE_POLL_SECONDS={record['poll_seconds']}" in lines
    # As systemd itself reads the unit: the bake-time file first, so kiln-node's values win.
    shown = host.run("sudo systemctl show --property EnvironmentFiles kiln-haproxy-bridge")
    files = [line.split("=", 1)[1].split()[0] for line in shown.stdout.splitlines() if "=" in line]
    assert files == [DEFAULTS, BOOT_ENV], shown.stdout


def test_haproxy_workers_run_as_user_haproxy_in_a_chroot(host, components, phase, role) -> None:
    require(components, "haproxy")
    boot_only(phase)
    for_roles(role, "standalone", "master")
    assert wait_until(host, "systemctl is-active haproxy", seconds=180).stdout.strip() == "active"
    master = host.run("sudo systemctl show --property MainPID --value haproxy").stdout.strip()
    assert master.isdigit() and master != "0"
    found = host.run(f"grep -lE '^PPid:[[:space:]]+{master}$' /proc/[0-9]*/status 2>/dev/null")
    workers = [path.split("/")[2] for path in found.stdout.split()]
    assert workers, f"haproxy's master {master} has no worker"
    uid = host.run("id -u haproxy").stdout.strip()
    assert uid.isdigit(), "no user haproxy"
    for pid in workers:
        status = host.run(f"cat /proc/{pid}/status").stdout
        uids = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
        assert uids == [[uid] * 4], f"worker {pid}: {uids}"
        assert host.run(f"sudo readlink /proc/{pid}/root").stdout.strip() == "/var/lib/haproxy"


def test_bridge_config_is_live_and_answers_on_the_stats_socket(host, components, phase, role) -> None:
    """The bridge wrote haproxy.cfg with the port its environment names, haproxy reloaded into
    it (the `vhosts` frontend exists only there), and the runtime API answers."""
    require(components, "haproxy")
    require(components, "marathon")  # the bridge writes nothing until Marathon answers
    boot_only(phase)
    for_roles(role, "standalone", "master")
    written = wait_until(host, "sudo grep -c '^# Written by kiln-haproxy-bridge' /etc/haproxy/haproxy.cfg",
                         seconds=600)
    assert written.rc == 0, "kiln-haproxy-bridge never wrote /etc/haproxy/haproxy.cfg (is Marathon up?)"
    bridge = host.run("sudo systemctl show --property MainPID --value kiln-haproxy-bridge").stdout.strip()
    assert bridge.isdigit() and bridge != "0", "kiln-haproxy-bridge is not running"
    environ = host.run(f"sudo cat /proc/{bridge}/environ").stdout.split("\0")
    ports = [item.split("=", 1)[1] for item in environ if item.startswith("KILN_BRIDGE_VHOST_PORT=")]
    assert len(ports) == 1, "the bridge's environment has no KILN_BRIDGE_VHOST_PORT"
    config = host.run("sudo cat /etc/haproxy/haproxy.cfg").stdout
    assert f"frontend vhosts\n  bind 0.0.0.0:{ports[0]}\n" in config
    assert "\n  user haproxy\n  group haproxy\n  chroot /var/lib/haproxy\n" in config
    stat = wait_until(host, STATS % "show stat" + " | grep '^vhosts,FRONTEND,'", seconds=120)
    assert stat.rc == 0, stat.stdout + stat.stderr
    info = host.run(STATS % "show info").stdout
    assert "Name: HAProxy" in info.splitlines()
