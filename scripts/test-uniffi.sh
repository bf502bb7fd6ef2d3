#!/usr/bin/env bash
# The Kotlin/Swift/Python SDKs, executed: builds the library and the bindings
# (scripts/build-uniffi.sh), installs the Python package into a venv and runs its pytest
# suite, then compiles and runs the Kotlin test program. Both run against the real
# zajel-server binary, which each test starts on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_python_venv
ensure_kotlin

target="${CARGO_TARGET_DIR:-target}"
bash scripts/build-uniffi.sh

echo "==> Python SDK: pip install bindings/uniffi/python, pytest"
rm -rf bindings/uniffi/python/build   # setuptools would reuse a stale copy from there
"$ZAJEL_VENV/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps --force-reinstall ./bindings/uniffi/python
# Run from the tests directory so `zajel` is the installed package, not the source tree.
(cd bindings/uniffi/python/tests && "$ZAJEL_VENV/bin/pytest" -q -p no:cacheprovider .)

echo "==> Kotlin SDK: kotlinc (generated bindings + test), run"
jars=/usr/share/java
cp="$jars/jna.jar:$jars/kotlinx-coroutines-core.jar:$jars/kotlinx-coroutines-core-common.jar:$jars/atomicfu.jar"
out="$target/uniffi/kotlin-test"
mkdir -p "$out"
"$KOTLINC" -nowarn -cp "$cp" "$target/uniffi/kotlin/dev/zajel/zajel.kt" \
  bindings/uniffi/kotlin/*.kt -include-runtime -d "$out/zajel-test.jar" 2>&1 \
  | { grep -v -e '^warning:' || true; }
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
java -Djna.library.path="$target/debug" -cp "$out/zajel-test.jar:$cp" ZajelTestKt \
  "$target/debug/zajel-server" "$data"
