#!/usr/bin/env bash
# docker: the distro's Docker engine for Mesos' docker containerizer, installed disabled
# (kiln-node starts it on agents). On Debian/Ubuntu also AppArmor's tools: without
# apparmor_parser `docker run` fails on minimal images ("docker-default profile could not be
# loaded").
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

source=${KILN_DOCKER_SOURCE:-distro}
if [[ "$source" != distro ]]; then
  kiln_die "components.docker.source '$source' is not supported (supported: distro)"
fi

case "$KILN_FAMILY" in
  apt)
    package=docker.io
    pkg_install_listed
    ;;
  dnf)
    package=docker
    pkg_install_listed
    ;;
esac

command -v docker >/dev/null || kiln_die "$package is installed but there is no docker command"
service_disable docker.service docker.socket containerd.service

version=$(pkg_version "$package")
extra=$(kiln_json package="$package" source="$source")
record_component docker "$version" "$extra"
