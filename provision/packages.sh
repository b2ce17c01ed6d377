#!/usr/bin/env bash
# packages: every enabled component's distribution packages (components/<name>/component.json,
# as kiln.env's KILN_<NAME>_PACKAGES for this family), installed in one go at the start of the
# system layer. Components whose own scripts run in a later layer (kiln's payload) then find
# their packages installed, so rebuilding that layer installs nothing.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

kiln_need KILN_COMPONENTS "the enabled components"
read -ra components <<<"${KILN_COMPONENTS:-}"
all=()
for component in "${components[@]}"; do
  var="KILN_${component^^}_PACKAGES"
  var=${var//-/_}
  read -ra listed <<<"${!var:-}"
  all+=("${listed[@]}")
done
if ((${#all[@]})); then
  mapfile -t unique < <(printf '%s\n' "${all[@]}" | LC_ALL=C sort -u)
  pkg_install "${unique[@]}"
fi
kiln_log "packages of ${components[*]}: ${#all[@]} listed"
