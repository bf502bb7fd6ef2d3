#!/usr/bin/env bash
# Refreshes the vendored RustSec advisory database snapshot that scripts/deny.sh checks against
# when neither ZAJEL_ADVISORY_DB nor GitHub is at hand (see third_party/advisory-db/README.md).
#
#   scripts/update-advisory-db.sh                  clone github.com/rustsec/advisory-db (network)
#   scripts/update-advisory-db.sh /path/to/clone   a local clone or bare mirror of it
#
# Writes third_party/advisory-db/advisory-db-<commit date>-<short commit>.tar.xz (the advisories
# and the database's license files at the source's HEAD, about 300 KB), removes the previous
# snapshot and updates the README's "Current snapshot" line. Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=third_party/advisory-db
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

source="${1:-}"
if [[ -z "$source" ]]; then
  git clone --quiet --bare --depth 1 https://github.com/rustsec/advisory-db "$tmp/src.git"
  source="$tmp/src.git"
fi
# A work tree or a bare repository: let git find the git directory.
git_dir="$(git -C "$source" rev-parse --absolute-git-dir)"
commit="$(git --git-dir="$git_dir" rev-parse HEAD)"
date="$(git --git-dir="$git_dir" log -1 --format=%cs HEAD)"
name="advisory-db-$date-${commit:0:7}.tar.xz"

git --git-dir="$git_dir" archive --format=tar HEAD crates rust LICENSE.txt LICENSES \
  | xz -9 > "$tmp/$name"
find "$dir" -maxdepth 1 -name 'advisory-db-*.tar.xz' -delete
mv "$tmp/$name" "$dir/$name"
sed -i "s|^Current snapshot: .*|Current snapshot: \`$name\`, commit \`$commit\` of $date.|" \
  "$dir/README.md"
echo "wrote $dir/$name ($(du -k "$dir/$name" | cut -f1) KB): commit $commit of $date"
