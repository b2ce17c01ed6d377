#!/usr/bin/env bash
# Turn an installed tree into the target's native package. kiln.packages runs this inside the
# target's build root (see compile.sh) with:
#   /kiln/tree     holds the installed tree as a tar, KILN_TREE_FILE (compile.sh's result, or a prebuilt one)
#   /kiln/recipe   the recipe's folder (files/ holds the units and the init wrapper), read-only
#   /kiln/work     scratch space; the package, its file list and its dependencies go to out/
# and the environment KILN_NAME, KILN_VERSION (the package version), KILN_SUMMARY,
# KILN_HOMEPAGE, KILN_FORMAT (deb or rpm), KILN_PREFIX (the tree's prefix, /usr or /usr/local)
# and KILN_RUNTIME_DEPENDS (the recipe's runtime packages, one per line).
#
# Every library an ELF file names (NEEDED) must be found (ldd), and each one found outside the
# package must belong to a package the recipe lists: the package's dependencies are checked,
# not guessed. Dependencies get the build root's versions as their minimum.
set -Eeuo pipefail
shopt -s nullglob

work=/kiln/work
stage=$work/stage
out=$work/out
rm -rf "$stage" "$out"
mkdir -p "$stage" "$out"
step() { printf 'kiln-step: %s\n' "$*"; }
die() {
  printf 'kiln-package: error: %s\n' "$*" >&2
  exit 1
}

step "unpack the installed tree"
tar -xf "/kiln/tree/${KILN_TREE_FILE:?}" -C "$stage"
prefix=${KILN_PREFIX:-/usr}
[[ -x "$stage$prefix/sbin/mesos-master" ]] || die "the tree has no $prefix/sbin/mesos-master (is KILN_PREFIX right?)"

step "add the init wrapper and the systemd units"
libexec=$prefix/libexec/kiln
install -d "$stage$libexec" "$stage/lib/systemd/system"
sed "s|@SBIN@|$prefix/sbin|g" /kiln/recipe/files/mesos-init-wrapper >"$stage$libexec/mesos-init-wrapper"
chmod 0755 "$stage$libexec/mesos-init-wrapper"
for unit in mesos-master mesos-agent; do
  sed "s|@LIBEXEC@|$libexec|g" "/kiln/recipe/files/$unit.service" >"$stage/lib/systemd/system/$unit.service"
  chmod 0644 "$stage/lib/systemd/system/$unit.service"
done
install -d "$stage/etc/mesos" "$stage/etc/mesos-master" "$stage/etc/mesos-agent"

step "check the libraries every program loads"
mapfile -t wanted <<<"${KILN_RUNTIME_DEPENDS:-}"
declare -A listed=() used=()
for pkg in "${wanted[@]}"; do
  [[ -n "$pkg" ]] && listed[$pkg]=1
done
libdirs="$stage$prefix/lib:$stage$prefix/lib/mesos/modules"
missing=()
while IFS= read -r -d '' file; do
  file -b "$file" | grep -q '^ELF' || continue
  # Only what the file itself names (NEEDED) is its dependency; ldd says where each is found.
  declare -A found=()
  while read -r name arrow path _; do
    if [[ "$arrow" == "=>" ]]; then
      found[$name]=$path
    elif [[ "$name" == /* ]]; then # the dynamic loader: listed by its path alone
      found[${name##*/}]=$name
    fi
  done < <(LD_LIBRARY_PATH=$libdirs ldd "$file" 2>/dev/null || true)
  while read -r name; do
    path=${found[$name]:-not}
    if [[ "$path" == "not" ]]; then
      missing+=("${file#"$stage"}: $name")
      continue
    fi
    [[ "$path" == "$stage"/* ]] && continue
    owner=$(dpkg -S "$path" 2>/dev/null | head -n1 | cut -d: -f1) ||
      owner=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n1 | cut -d: -f1) || true
    [[ -n "$owner" ]] || die "${file#"$stage"} loads $path, which no package of the build root owns"
    used[$owner]=1
  done < <(readelf -d "$file" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
  unset found
done < <(find "$stage" -type f -print0)
((${#missing[@]} == 0)) || die "libraries not found: ${missing[*]}"
unlisted=()
for pkg in "${!used[@]}"; do
  [[ -n "${listed[$pkg]:-}" ]] || unlisted+=("$pkg")
done
((${#unlisted[@]} == 0)) || die "the programs load libraries of packages the recipe does not list in runtime_depends: ${unlisted[*]}"
depends=()
for pkg in "${wanted[@]}"; do
  [[ -n "$pkg" ]] || continue
  if version=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null) && [[ -n "$version" ]]; then
    depends+=("$pkg (>= $version)")
  else
    depends+=("$pkg")
  fi
  [[ -n "${used[$pkg]:-}" ]] || printf 'kiln-note: %s is listed but no program loads it (kept: it may be needed at run time)\n' "$pkg"
done
printf '%s\n' "${depends[@]}" >"$out/depends.txt"

(cd "$stage" && find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\.||' | LC_ALL=C sort) >"$out/files.txt"
size_kib=$(du -sk "$stage" | cut -f1)

case "${KILN_FORMAT:-deb}" in
  deb)
    step "build the .deb"
    arch=$(dpkg --print-architecture)
    install -d "$stage/DEBIAN"
    (cd "$stage" && find etc -type f | sed 's|^|/|' | LC_ALL=C sort) >"$stage/DEBIAN/conffiles"
    [[ -s "$stage/DEBIAN/conffiles" ]] || rm "$stage/DEBIAN/conffiles"
    joined=$(printf '%s, ' "${depends[@]}")
    {
      printf 'Package: %s\n' "$KILN_NAME"
      printf 'Version: %s\n' "$KILN_VERSION"
      printf 'Architecture: %s\n' "$arch"
      printf 'Maintainer: kiln <kiln@localhost>\n'
      printf 'Installed-Size: %s\n' "$size_kib"
      printf 'Depends: %s\n' "${joined%, }"
      printf 'Conflicts: aventer-mesos, mesos\n'
      printf 'Section: admin\nPriority: optional\n'
      printf 'Homepage: %s\n' "$KILN_HOMEPAGE"
      printf 'Description: %s\n' "$KILN_SUMMARY"
      printf ' Built from source by kiln (invoke package); units installed disabled.\n'
    } >"$stage/DEBIAN/control"
    # libmesos lands in a directory ld.so searches: refresh its cache on install and removal.
    printf 'activate-noawait ldconfig\n' >"$stage/DEBIAN/triggers"
    file="${KILN_NAME}_${KILN_VERSION}_${arch}.deb"
    dpkg-deb --root-owner-group -Zxz -b "$stage" "$out/$file" >/dev/null
    ;;
  rpm)
    # Written to the same recipe as the .deb; no Amazon Linux build root can be made here, so
    # this branch has not run (kiln says so before it would).
    step "build the .rpm"
    arch=$(uname -m)
    spec=$work/$KILN_NAME.spec
    {
      printf 'Name: %s\nVersion: %s\nRelease: 1\n' "$KILN_NAME" "${KILN_VERSION%%-*}"
      printf 'Summary: %s\nLicense: Apache-2.0\nURL: %s\n' "$KILN_SUMMARY" "$KILN_HOMEPAGE"
      for dep in "${wanted[@]}"; do [[ -n "$dep" ]] && printf 'Requires: %s\n' "$dep"; done
      printf '%%description\n%s\n' "$KILN_SUMMARY"
      printf '%%install\ncp -a %s/. %%{buildroot}/\n' "$stage"
      printf '%%files\n'
      sed 's|^|"|; s|$|"|' "$out/files.txt"
    } >"$spec"
    rpmbuild -bb --define "_rpmdir $out" --define "_build_id_links none" "$spec" >/dev/null
    file=$(cd "$out" && find . -name '*.rpm' -printf '%P\n' | head -n1)
    ;;
  *) die "unknown package format ${KILN_FORMAT:-}" ;;
esac
printf 'kiln-package: %s\n' "$file"
