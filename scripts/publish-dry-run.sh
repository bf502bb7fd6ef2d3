#!/usr/bin/env bash
# Publish dry-run of zajel-core, zajel-server and zajel-client (CI's last step, scripts/test.sh).
#
# What `cargo publish --dry-run` checks, in dependency order (the unpublished zajel-core
# resolved from a temporary local registry): version requirements, metadata, the file list.
# Cargo's own verification then *builds* each package from its .crate in a fresh target dir
# with the default dev profile (all dependencies again: 210 s here even with the workspace's
# target dir shared). What it catches, a file left out of the package or a feature that only
# compiles next to another, a `cargo check` catches too: so package with --no-verify and check
# each unpacked .crate alone (its own default features) in a scratch workspace whose only
# zajel-core (and zajel-server) are the packaged ones, with the workspace's lock file and dev profile, so the
# dependencies clippy and cargo hack checked before it are reused (docs/ci.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="$(realpath "${CARGO_TARGET_DIR:-target}")"
crates=(zajel-core zajel-server zajel-client)
cargo package "${crates[@]/#/-p}" --no-verify
version="$(cargo metadata --no-deps --format-version 1 | python3 -c \
  'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "zajel-core"))')"
scratch="$target_dir/package/verify"
rm -rf "$scratch" && mkdir -p "$scratch"
members=() patches=()
for c in "${crates[@]}"; do
  tar xzf "$target_dir/package/$c-$version.crate" -C "$scratch"
  members+=("\"$c-$version\"")
  patches+=("$c = { path = \"$c-$version\" }")
done
cp Cargo.lock "$scratch/"
cat > "$scratch/Cargo.toml" <<TOML
[workspace]
members = [$(IFS=,; echo "${members[*]}")]
resolver = "3"

# Each other's dependency (zajel-core of both, zajel-server of the client's tests): the packaged one.
[patch.crates-io]
$(printf '%s\n' "${patches[@]}")

$(sed -n '/^\[profile.dev\]/,/^$/p;/^\[profile.dev.package/,/^$/p' Cargo.toml)
TOML
for c in "${crates[@]}"; do
  CARGO_TARGET_DIR="$target_dir" cargo check --manifest-path "$scratch/Cargo.toml" -p "$c"
done
