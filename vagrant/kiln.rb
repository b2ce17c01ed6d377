# kiln's Vagrant machinery, shared by the one-node trial (the Vagrantfile at the top of the
# checkout) and the clusters `invoke up` renders (build/vagrant/<cluster>/Vagrantfile +
# kiln-cluster.json). Both describe the same thing, rendered by kiln (Python) as JSON:
#
#   {"name", "box" => {"name", "version", "url", "components"}, "ssh" => {"username", "private_key"},
#    "libvirt" => {"driver"}, "wait_ready" => bool, "catalog" => {"endpoints" => [...], ...},
#    "machines" => [{"name", "ip", "role", "cpus", "memory_mb", "spec"}]}
#
# The Ruby holds no facts of its own: which box, which driver, which node spec and which UIs
# all come from that JSON. Kiln.trial asks kiln for the trial's (python -m kiln.vagrant.trial).
# Nothing here needs Vagrant loaded except Kiln.configure, so tests can run the rest with ruby.
require "json"
require "open3"

module Kiln
  # The provider this run of vagrant uses: --provider, then VAGRANT_DEFAULT_PROVIDER; "" = kiln's default.
  def self.provider(argv = ARGV, env = ENV)
    argv.each_with_index do |arg, i|
      return arg.split("=", 2)[1] if arg.start_with?("--provider=")
      return argv[i + 1] if arg == "--provider" && argv[i + 1]
    end
    env.fetch("VAGRANT_DEFAULT_PROVIDER", "")
  end

  # The trial's description, rendered by kiln from config.json for the provider this run uses.
  def self.trial(root, argv = ARGV, env = ENV)
    python = File.join(root, ".venv", "bin", "python")
    raise "kiln: #{python} is missing: run scripts/setup first" unless File.executable?(python)
    provider = provider(argv, env)
    command = [python, "-m", "kiln.vagrant.trial"]
    command += ["--provider", provider] unless provider.empty?
    out, err, status = Open3.capture3({ "KILN_ROOT" => root }, *command, chdir: root)
    $stderr.write(err) unless err.empty?
    raise "kiln: could not describe the trial (#{command.join(' ')} exited #{status.exitstatus})" unless status.success?
    JSON.parse(File.read(out.strip))
  end

  # Before the trial's `vagrant up` with libvirt: kiln puts the image of the box built here into
  # libvirt's pool itself (python -m kiln.vagrant.trial --seed-pool), in seconds, where
  # vagrant-libvirt's own upload takes minutes. When it cannot, it says so and Vagrant goes on.
  def self.seed_pool_before_up(config, root)
    config.trigger.before :up do |trigger|
      trigger.name = "kiln: the box image into libvirt's pool"
      trigger.ruby do |_env, machine|
        next unless machine.provider_name == :libvirt

        python = File.join(root, ".venv", "bin", "python")
        system({ "KILN_ROOT" => root }, python, "-m", "kiln.vagrant.trial", "--seed-pool", chdir: root)
      end
    end
  end

  # What a user opens next, shown when a machine is up: the endpoints of its role that the image
  # holds (every one when the box's contents are unknown), from the catalog in the JSON.
  def self.endpoints(cluster, role, ip)
    components = cluster["box"]["components"]
    cluster["catalog"]["endpoints"]
      .select { |e| e["roles"].include?(role) && (components.nil? || components.include?(e["component"])) }
      .map { |e| [e["label"], e["address"].gsub("{ip}", ip)] }
  end

  def self.urls(cluster, machine)
    lines = ["kiln: #{machine['name']} (#{machine['role']}) is up at #{machine['ip']}"]
    lines += endpoints(cluster, machine["role"], machine["ip"]).map { |label, url| format("  %-12s%s", label, url) }
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
        node.vm.post_up_message = urls(cluster, machine)

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
