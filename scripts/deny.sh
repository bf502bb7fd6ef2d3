#!/usr/bin/env bash
# cargo deny over the whole workspace graph (deny.toml): licenses, bans, sources and RustSec
# advisories. The advisory database is a git repository on GitHub, which this project's machines
# cannot reach, so it comes from, in this order:
#   ZAJEL_ADVISORY_DB=/path/to/advisory-db   a local clone (or bare mirror) of
#                                            github.com/rustsec/advisory-db: checked offline
#   (unset, GitHub reachable)                cargo-deny fetches the database itself
#   (unset, GitHub unreachable)              the snapshot vendored in third_party/advisory-db
#                                            (a warning when it is older than 180 days)
# Any advisory that matches a crate in the graph (and is not ignored in deny.toml) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_cargo_deny

# The manifest to check (the workspace by default; the advisory self-test passes another).
manifest=(--manifest-path "${ZAJEL_DENY_MANIFEST:-Cargo.toml}")

# The duplicate-version warnings (deny.toml: multiple-versions = "warn") are for reading by
# hand; CI prints errors only.
cargo deny --log-level error "${manifest[@]}" check licenses bans sources

target="${CARGO_TARGET_DIR:-target}"
# cargo-deny --offline reads the default database from <db-path>/advisory-db-<hash of its URL>.
db_root="$(realpath -m "$target/deny/advisory-dbs")"
db="$db_root/advisory-db-3157b0e258782691"
max_age_days=180

# Runs the advisories check offline against the database prepared in $db.
check_offline() {
  sed "s|^yanked = \"deny\"|&\ndb-path = \"$db_root\"|" deny.toml > "$target/deny/deny.toml"
  cargo deny --log-level error "${manifest[@]}" --offline --config "$target/deny/deny.toml" \
    check advisories
}

if [[ -n "${ZAJEL_ADVISORY_DB:-}" ]]; then
  rm -rf "$db"
  mkdir -p "$db_root"
  git clone --quiet --depth 1 "file://$(realpath "$ZAJEL_ADVISORY_DB")" "$db"
  echo "advisory database: $ZAJEL_ADVISORY_DB ($(git -C "$db" log -1 --format=%cs))"
  check_offline
elif timeout 10 git ls-remote --quiet https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  echo "advisory database: fetched from GitHub by cargo-deny"
  cargo deny --log-level error "${manifest[@]}" check advisories
else
  snapshot="$(find third_party/advisory-db -maxdepth 1 -name 'advisory-db-*.tar.xz' | sort | tail -n 1)"
  if [[ -z "$snapshot" ]]; then
    echo "advisories: no database: GitHub unreachable, ZAJEL_ADVISORY_DB unset, no snapshot in third_party/advisory-db"
    exit 1
  fi
  # advisory-db-<YYYY-MM-DD>-<commit>.tar.xz (scripts/update-advisory-db.sh names it).
  stem="$(basename "$snapshot" .tar.xz)"
  date="${stem:12:10}"
  commit="${stem:23}"
  age_days=$(( ($(date -u +%s) - $(date -u -d "$date" +%s)) / 86400 ))
  # cargo-deny --offline opens the database as a git repository and reads its HEAD commit: the
  # unpacked snapshot becomes one, committed with the snapshot's own date.
  rm -rf "$db"
  mkdir -p "$db"
  tar -xJf "$snapshot" -C "$db"
  git -C "$db" init --quiet --initial-branch=main
  git -C "$db" add --all
  GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
    git -C "$db" -c user.name="zajel deny.sh" -c user.email=deny@zajel.invalid \
      -c commit.gpgsign=false commit --quiet -m "RustSec advisory-db snapshot $commit of $date"
  echo "advisory database: vendored snapshot $snapshot (commit $commit of $date, $age_days days old)"
  if (( age_days > max_age_days )); then
    echo "WARNING: the advisory database snapshot is $age_days days old (over $max_age_days):" \
      "advisories published since are not checked. Refresh it: scripts/update-advisory-db.sh"
  fi
  check_offline
fi
