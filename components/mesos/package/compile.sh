#!/usr/bin/env bash
# Compile a package's source in kiln's build root and install it into a staging tree.
# kiln.packages runs this inside the build root (a private mount and PID namespace) with:
#   /kiln/src      the source (tarball or directory), read-only
#   /kiln/recipe   the recipe's folder (this script, its patches), read-only
#   /kiln/work     the build directory, kept between runs of the same compile key
# and the environment KILN_SOURCE (path of the source under /kiln/src), KILN_PATCHES
# (patch files under /kiln/recipe, one per line, applied in that order), KILN_CONFIGURE
# (configure arguments, one per line), KILN_JOBS and KILN_DROP (globs under the install
# root to leave out, one per line). Every step leaves a stamp, so an interrupted build
# resumes where it stopped; make itself is incremental. The result is /kiln/work/stage:
# the installed tree, trimmed and stripped. Lines starting "kiln-" are read by kiln.
set -Eeuo pipefail
shopt -s nullglob

work=/kiln/work
cd "$work"
step() { printf 'kiln-step: %s\n' "$*"; }

if [[ ! -e .unpacked ]]; then
  step unpack
  rm -rf source
  mkdir source
  if [[ -d "$KILN_SOURCE" ]]; then
    cp -a "$KILN_SOURCE/." source/
  else
    tar -xf "$KILN_SOURCE" -C source --strip-components=1
  fi
  mapfile -t patches <<<"${KILN_PATCHES:-}"
  for patch in "${patches[@]}"; do
    [[ -n "$patch" ]] || continue
    step "patch $patch"
    patch -d source -p1 --forward --quiet <"/kiln/recipe/$patch"
  done
  touch .unpacked
fi

if [[ ! -e .bootstrapped ]]; then
  step bootstrap
  (cd source && ./bootstrap)
  touch .bootstrapped
fi

mapfile -t configure_args <<<"$KILN_CONFIGURE"
if [[ ! -e .configured ]]; then
  step configure
  rm -rf obj
  mkdir obj
  (cd obj && ../source/configure "${configure_args[@]}")
  touch .configured
fi

if [[ ! -e .compiled ]]; then
  step compile
  make -C obj -j"${KILN_JOBS:-2}"
  touch .compiled
fi

step install
rm -rf stage stage.partial
make -C obj install DESTDIR="$work/stage.partial" >/dev/null
mapfile -t drop <<<"${KILN_DROP:-}"
for pattern in "${drop[@]}"; do
  [[ -n "$pattern" ]] || continue
  for path in stage.partial/$pattern; do
    rm -rf "$path"
  done
done
step strip
while IFS= read -r -d '' file; do
  if file -b "$file" | grep -q '^ELF'; then
    strip --strip-unneeded "$file"
  fi
done < <(find stage.partial -type f -print0)
mv stage.partial stage
printf 'kiln-staged: %s\n' "$(du -sb stage | cut -f1)"
