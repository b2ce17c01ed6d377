"""HAProxy and kiln's Marathon bridge."""

from __future__ import annotations

from conftest import boot_only, for_roles, require, unit_enabled


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
