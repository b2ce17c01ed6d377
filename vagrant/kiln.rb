# kiln's Vagrant machinery, shared by the one-node trial (Vagrantfile at the repository root,
# read straight from config.json like playa-mesos did) and the clusters `invoke up` renders
# (build/vagrant/<cluster>/Vagrantfile + kiln-cluster.json). Both describe the same thing:
#
#   {"name", "box" => {"name", "version", "url", "components"}, "ssh" => {"username", "private_key"},
#    "libvirt" => {"driver"}, "wait_ready" => bool,
#    "machines" => [{"name", "ip", "role", "cpus", "memory_mb", "spec"}]}
#
# Kiln.configure turns that into machines; Kiln.trial builds it from config.json.
# Nothing here needs Vagrant loaded except Kiln.configure, so tests can evaluate the rest
# with plain ruby.
require "json"

module Kiln
  # Builders whose boxes each provider runs (kiln's artifact directories are <target>-<builder>).
  BUILDER_FOR_PROVIDER = { "libvirt" => "qemu", "virtualbox" => "virtualbox" }.freeze
  PROBE_CACHE = File.join("build", "cache", "accel-probe.json")

  # The provider this run of vagrant uses: --provider, then VAGRANT_DEFAULT_PROVIDER, then config.
  def self.provider(configured, argv = ARGV, env = ENV)
    argv.each_with_index do |arg, i|
      return arg.split("=", 2)[1] if arg.start_with?("--provider=")
      return argv[i + 1] if arg == "--provider" && argv[i + 1]
    end
    env.fetch("VAGRANT_DEFAULT_PROVIDER", "").empty? ? configured : env["VAGRANT_DEFAULT_PROVIDER"]
  end

  # libvirt's domain type: kvm only where kiln's probe saw KVM really run a guest (a /dev/kvm
  # that cannot is common in nested setups); qemu (TCG) otherwise. KILN_LIBVIRT_DRIVER wins.
  def self.libvirt_driver(root, env = ENV)
    forced = env.fetch("KILN_LIBVIRT_DRIVER", "")
    return forced unless forced.empty?
    return "qemu" unless File.exist?("/dev/kvm")
    verdict = read_json(File.join(root, PROBE_CACHE))
    return "kvm" if verdict && verdict["accel"] == "kvm"
    if verdict.nil?
      warn "kiln: KVM not probed yet, using TCG (slow); run `invoke doctor --probe` to check KVM"
    end
    "qemu"
  end

  # The box: a locally built one (its catalog under build/artifacts) wins over the configured URL.
  def self.box(root, trial, provider)
    builder = BUILDER_FOR_PROVIDER.fetch(provider, provider)
    catalog_path = File.join(root, "build", "artifacts", "#{trial['target']}-#{builder}", "box-catalog.json")
    catalog = read_json(catalog_path)
    if catalog
      version = catalog["versions"].first["version"]
      return { "name" => catalog["name"], "version" => version, "url" => "file://#{catalog_path}",
               "components" => image_components(File.dirname(catalog_path)) }
    end
    if trial["box_url"].to_s.empty?
      warn "kiln: no locally built box at #{catalog_path} and trial.box_url is empty: " \
           "run `invoke build --profile offline` or set trial.box_url in config.json"
    end
    { "name" => trial["box_name"], "version" => "", "url" => trial["box_url"].to_s, "components" => nil }
  end

  # The components an image built here holds, sorted; nil when its manifest is unreadable.
  def self.image_components(artifact_dir)
    manifest = read_json(File.join(artifact_dir, "image-manifest.json"))
    components = manifest.is_a?(Hash) ? manifest["components"] : nil
    components.is_a?(Hash) ? components.keys.sort : nil
  end

  # The trial as kiln-cluster.json would describe it: shape "1", one standalone node.
  def self.trial(root, argv = ARGV, env = ENV)
    config = read_json(File.join(root, "config.json")) or raise "kiln: cannot read #{root}/config.json"
    trial = config["trial"]
    ip = trial["ip_address"]
    provider = provider(trial["provider"], argv, env)
    spec = { "cluster" => config["cluster"]["name"], "role" => "standalone", "node_id" => 1,
             "name" => trial["vm_name"], "ip" => ip, "masters" => [ip], "options" => {} }
    {
      "name" => "#{config['cluster']['name']}-trial",
      "box" => box(root, trial, provider),
      "ssh" => { "username" => config["targets"].fetch(trial["target"], {}).fetch("ssh_username", "vagrant"),
                 "private_key" => File.join(root, "build", "keys", "kiln_ed25519") },
      "libvirt" => { "driver" => libvirt_driver(root, env) },
      "wait_ready" => true,
      "machines" => [{ "name" => trial["vm_name"], "ip" => ip, "role" => "standalone",
                       "cpus" => trial["cpus"], "memory_mb" => trial["memory_mb"], "spec" => spec }],
    }
  end

  def self.read_json(path)
    JSON.parse(File.read(path))
  rescue Errno::ENOENT, JSON::ParserError
    nil
  end

  # What a user opens next, shown when a machine is up: the services of its role that the image
  # holds (every one when the box's contents are unknown). kiln/endpoints.py lists the same.
  SERVERS = %w[standalone master].freeze
  WORKERS = %w[standalone agent].freeze
  ENDPOINTS = [
    ["Mesos", "http://%<ip>s:5050", "mesos", SERVERS],
    ["Marathon", "http://%<ip>s:8080", "marathon", SERVERS],
    ["ZooKeeper", "%<ip>s:2181", "zookeeper", SERVERS],
    ["HAProxy", "http://%<ip>s/", "haproxy", SERVERS],
    ["Mesos agent", "http://%<ip>s:5051", "mesos", WORKERS]
  ].freeze

  def self.endpoints(role, ip, components)
    ENDPOINTS.select { |_, _, component, roles| roles.include?(role) && (components.nil? || components.include?(component)) }
             .map { |label, address, _, _| [label, format(address, ip: ip)] }
  end

  def self.urls(machine, components)
    lines = ["kiln: #{machine['name']} (#{machine['role']}) is up at #{machine['ip']}"]
    lines += endpoints(machine["role"], machine["ip"], components).map { |label, url| format("  %-12s%s", label, url) }
    lines << "  status:     vagrant ssh #{machine['name']} -c 'sudo kiln-node status'"
    lines.join("\n")
  end

  # The provisioner: the image is generic; this node spec makes it what the machine is.
  APPLY = <<~'SHELL'.freeze
    set -eu
    install -d -m 0755 /etc/kiln
    printf '%s' "$1" > /etc/kiln/node.json.new && mv /etc/kiln/node.json.new /etc/kiln/node.json
    kiln-node apply /etc/kiln/node.json
    if [ "$2" = wait ]; then
      echo "kiln: waiting for this node's services (up to $3 s)"
      end=$(( $(date +%s) + $3 ))
      until kiln-node status >/dev/null; do
        if [ "$(date +%s)" -ge "$end" ]; then kiln-node status; exit 1; fi
        sleep 3
      done
      kiln-node status
    fi
  SHELL

  def self.configure(config, cluster)
    box = cluster["box"]
    config.vm.box = box["name"]
    config.vm.box_version = box["version"] unless box["version"].to_s.empty?
    config.vm.box_url = box["url"] unless box["url"].to_s.empty?
    config.vm.box_check_update = false
    config.vm.synced_folder ".", "/vagrant", disabled: true
    config.ssh.username = cluster["ssh"]["username"]
    config.ssh.private_key_path = cluster["ssh"]["private_key"]
    config.ssh.insert_key = false
    driver = cluster["libvirt"]["driver"]

    cluster["machines"].each_with_index do |machine, index|
      config.vm.define machine["name"], primary: index.zero? do |node|
        node.vm.hostname = machine["name"]
        node.vm.network "private_network", ip: machine["ip"]
        node.vm.post_up_message = urls(machine, box["components"])

        node.vm.provider "libvirt" do |lv|
          lv.driver = driver
          if driver == "kvm"
            lv.cpu_mode = "host-passthrough"
            lv.nested = true # the Rancher Mesos executor runs KVM guests inside agents
          end
          lv.cpus = machine["cpus"]
          lv.memory = machine["memory_mb"]
          lv.graphics_type = "none"
        end

        node.vm.provider "virtualbox" do |vb|
          vb.name = "#{cluster['name']}-#{machine['name']}"
          vb.cpus = machine["cpus"]
          vb.memory = machine["memory_mb"]
          vb.customize ["modifyvm", :id, "--nested-hw-virt", "on"]
        end

        node.vm.provision "kiln-node", type: "shell", inline: APPLY,
          args: [JSON.generate(machine["spec"]), cluster["wait_ready"] ? "wait" : "nowait", "300"]
      end
    end
  end
end
