#!/usr/bin/env bash
# node: kiln's boot-time node configurator (kiln_node) in /opt/kiln/lib with the kiln-node
# command; it turns a node spec into this node's config and services at boot.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

install_kiln_python_package kiln_node /usr/local/sbin/kiln-node

# The version of the package as installed (its __version__), not kiln's from kiln.env.
version=$(kiln_python_version_of /opt/kiln/lib/kiln_node)
[[ -n "$version" ]] || kiln_die "/opt/kiln/lib/kiln_node/__init__.py has no __version__: cannot record what is installed"
extra=$(kiln_json install_dir=/opt/kiln/lib/kiln_node command=/usr/local/sbin/kiln-node python="$(python3 -V 2>&1)")
record_component node "$version" "$extra"
