#!/usr/bin/env bash
# manifest: /etc/kiln/manifest.json, what this image holds with exact versions (assembled from
# /etc/kiln/components.d/*.json), for the build metadata and the testinfra suites; and beside it
# /etc/kiln/catalog.json, the component catalog kiln-node reads (rendered by kiln).
# The manifest also says what was meant to be there: "enabled", the components kiln baked this image
# with (KILN_COMPONENTS: components.enabled less components.exclude), and "not_baked", those of
# them whose settings turned them off, with the reason their bake script gave
# (record_component_off). An enabled component in neither "components" nor "not_baked" failed to
# record itself: the suites fail it (tests/infra/test_manifest.py).
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

kiln_need KILN_VERSION "kiln's version"
json=$(_kiln_python - /etc/kiln/components.d "$KILN_VERSION" "$KILN_TARGET" "$KILN_DISTRO" \
  "${KILN_RELEASE:-}" "${KILN_BUILD_TIME:-}" "${KILN_GIT_REVISION:-}" "${KILN_COMPONENTS:-}" <<'PY'
import glob
import json
import os
import sys

records, kiln_version, target, distro, release, build_time, git_revision, enabled = sys.argv[1:9]
components = {}
for path in sorted(glob.glob(os.path.join(records, "*.json"))):
    with open(path) as f:
        record = json.load(f)
    name = record.pop("name", os.path.basename(path)[: -len(".json")])
    components[name] = record
not_baked = {}
for path in sorted(glob.glob(os.path.join(records, "*.off"))):
    name = os.path.basename(path)[: -len(".off")]
    if name not in components:
        with open(path, encoding="utf-8") as f:
            not_baked[name] = f.read().strip()
manifest = {
    "kiln_version": kiln_version,
    "target": target,
    "distro": distro,
    "release": release,
    "build_time": build_time or None,
    "git_revision": git_revision or None,
    "components": components,
    "enabled": enabled.split(),
    "not_baked": not_baked,
}
print(json.dumps(manifest, sort_keys=True, indent=2))
PY
)
printf '%s\n' "$json" | write_file_if_changed /etc/kiln/manifest.json 0644
[[ -f "$KILN_SRC/catalog.json" ]] || kiln_die "$KILN_SRC/catalog.json is missing: kiln renders it with kiln.env"
write_file_if_changed /etc/kiln/catalog.json 0644 <"$KILN_SRC/catalog.json"

missing=()
for component in ${KILN_COMPONENTS:-}; do
  if [[ -f "/etc/kiln/components.d/$component.off" && ! -f "/etc/kiln/components.d/$component.json" ]]; then
    kiln_log "not baked although enabled: $component ($(head -n 1 "/etc/kiln/components.d/$component.off"))"
  elif [[ ! -f "/etc/kiln/components.d/$component.json" ]]; then
    missing+=("$component")
  fi
done
if ((${#missing[@]})); then
  # The suites fail these (tests/infra/test_manifest.py): enabled, yet no record and no reason.
  kiln_warn "enabled but left no record and no reason (record_component_off): ${missing[*]}"
fi
kiln_log "manifest: /etc/kiln/manifest.json"
