#!/usr/bin/env bash
# manifest: /etc/kiln/manifest.json, what this image holds with exact versions (assembled from
# /etc/kiln/components.d/*.json), for the build metadata and the testinfra suites; and beside it
# /etc/kiln/catalog.json, the component catalog kiln-node reads (rendered by kiln).
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

kiln_need KILN_VERSION "kiln's version"
json=$(_kiln_python - /etc/kiln/components.d "$KILN_VERSION" "$KILN_TARGET" "$KILN_DISTRO" \
  "${KILN_RELEASE:-}" "${KILN_BUILD_TIME:-}" "${KILN_GIT_REVISION:-}" <<'PY'
import glob
import json
import os
import sys

records, kiln_version, target, distro, release, build_time, git_revision = sys.argv[1:8]
components = {}
for path in sorted(glob.glob(os.path.join(records, "*.json"))):
    with open(path) as f:
        record = json.load(f)
    name = record.pop("name", os.path.basename(path)[: -len(".json")])
    components[name] = record
manifest = {
    "kiln_version": kiln_version,
    "target": target,
    "distro": distro,
    "release": release,
    "build_time": build_time or None,
    "git_revision": git_revision or None,
    "components": components,
}
print(json.dumps(manifest, sort_keys=True, indent=2))
PY
)
printf '%s\n' "$json" | write_file_if_changed /etc/kiln/manifest.json 0644
[[ -f "$KILN_SRC/catalog.json" ]] || kiln_die "$KILN_SRC/catalog.json is missing: kiln renders it with kiln.env"
write_file_if_changed /etc/kiln/catalog.json 0644 <"$KILN_SRC/catalog.json"

missing=()
for component in ${KILN_COMPONENTS:-}; do
  [[ -f "/etc/kiln/components.d/$component.json" ]] || missing+=("$component")
done
if ((${#missing[@]})); then
  kiln_log "no record (component skipped or off): ${missing[*]}"
fi
kiln_log "manifest: /etc/kiln/manifest.json"
