#!/usr/bin/env bash
# java: the headless JRE ZooKeeper and Marathon run on (distro OpenJDK on apt, Corretto on AL2023).
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

case "$KILN_FAMILY" in
  apt)
    kiln_need KILN_JAVA_APT_PACKAGE components.java.apt_package
    package=$KILN_JAVA_APT_PACKAGE
    ;;
  dnf)
    kiln_need KILN_JAVA_DNF_PACKAGE components.java.dnf_package
    package=$KILN_JAVA_DNF_PACKAGE
    ;;
esac

pkg_install "$package"
java_bin=$(command -v java) || kiln_die "$package is installed but there is no java on PATH"
java_home=$(dirname "$(dirname "$(readlink -f "$java_bin")")")

version=$(pkg_version "$package")
extra=$(kiln_json package="$package" java_home="$java_home")
record_component java "$version" "$extra"
