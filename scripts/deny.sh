#!/usr/bin/env bash
# cargo deny over the whole workspace graph (deny.toml): licenses, bans and sources always;
# RustSec advisories when an advisory database is at hand. The database is a git repository on
# GitHub, which this project's machines cannot reach, so:
#   ZAJEL_ADVISORY_DB=/path/to/advisory-db   a local clone (or bare mirror) of
#                                            github.com/rustsec/advisory-db: checked offline
#   (unset, GitHub reachable)                cargo-deny fetches the database itself
#   (unset, GitHub unreachable)              advisories are skipped, and the output says so
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_cargo_deny

# The duplicate-version warnings (deny.toml: multiple-versions = "warn") are for reading by
# hand; CI prints errors only.
cargo deny --log-level error check licenses bans sources

target="${CARGO_TARGET_DIR:-target}"
if [[ -n "${ZAJEL_ADVISORY_DB:-}" ]]; then
  # cargo-deny --offline reads the default database from <db-path>/advisory-db-<hash of its
  # URL>: put a shallow clone of the local copy there.
  db_root="$target/deny/advisory-dbs"
  db="$db_root/advisory-db-3157b0e258782691"
  rm -rf "$db"
  mkdir -p "$db_root"
  git clone --quiet --depth 1 "file://$(realpath "$ZAJEL_ADVISORY_DB")" "$db"
  echo "advisory database: $ZAJEL_ADVISORY_DB ($(git -C "$db" log -1 --format=%cs))"
  sed "s|^yanked = \"deny\"|&\ndb-path = \"$db_root\"|" deny.toml > "$target/deny/deny.toml"
  cargo deny --log-level error --offline --config "$target/deny/deny.toml" check advisories
elif timeout 10 git ls-remote --quiet https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
else
  echo "advisories: SKIPPED: no advisory database (GitHub unreachable, ZAJEL_ADVISORY_DB unset)"
fi
