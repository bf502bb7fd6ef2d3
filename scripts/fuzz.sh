#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the two parsers that face the network:
#   frame_decoder   every WebSocket text frame (zajel_core::protocol::ClientFrame::decode)
#   http_bodies     the JSON bodies of the HTTP API, through the engine's real router
# Builds fuzz/ once, then runs each target for ZAJEL_FUZZ_SECONDS (default 20) from a seed
# corpus made of the documentation's examples. A panic, a broken contract (see the targets) or
# a leak fails the run; libFuzzer saves the input under fuzz/artifacts/<target>/.
#
# cargo-fuzz wants a nightly compiler (it passes -Z flags for the sanitizer); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them. See docs/ci.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_cargo_fuzz

seconds="${ZAJEL_FUZZ_SECONDS:-20}"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}/fuzz")"
corpus="$target_dir/corpus"
export RUSTC_BOOTSTRAP=1

# Seeds: every JSON example of docs/protocol.md for the frame decoder; for the HTTP bodies, a
# selector byte (which endpoint, see http_bodies.rs) followed by the body the docs describe.
rm -rf "$corpus"
mkdir -p "$corpus/frame_decoder" "$corpus/http_bodies"
python3 - "$corpus" <<'PY'
import pathlib, re, sys
corpus = pathlib.Path(sys.argv[1])
doc = pathlib.Path("docs/protocol.md").read_text()
blocks = re.findall(r"^```json\n(.*?)^```$", doc, flags=re.S | re.M)
for i, block in enumerate(blocks):
    (corpus / "frame_decoder" / f"doc-{i:03}.json").write_text(block)
bodies = [
    (0, '{"username": "alice", "password": "correct horse battery"}'),
    (1, '{"username": "alice", "password": "correct horse battery"}'),
    (2, '{"username": "alice_2"}'),
    (3, '{}'),
]
for i, (pick, body) in enumerate(bodies):
    (corpus / "http_bodies" / f"doc-{i}").write_bytes(bytes([pick]) + body.encode())
print(f"seeds: {len(blocks)} frame examples, {len(bodies)} HTTP bodies")
PY

# --codegen-units 16: cargo-fuzz's default of 1 makes the build several times slower, for a
# few percent of fuzzing speed that a 20-second run does not need. `run` gets the same options,
# or it would rebuild.
opts=(--fuzz-dir fuzz --target-dir "$target_dir/build" --codegen-units 16)
build_start=$SECONDS
cargo fuzz build "${opts[@]}"
echo "fuzz build: $((SECONDS - build_start)) s"
for t in frame_decoder http_bodies; do
  run_start=$SECONDS
  log="$target_dir/$t.log"
  # -rss_limit_mb: a leak or a blow-up fails the run instead of exhausting the machine.
  if ! cargo fuzz run "${opts[@]}" "$t" "$corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t FAILED: the input is in fuzz/artifacts/$t/ (log: $log)"
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  echo "fuzz target $t: ${runs:-?} inputs in ${seconds} s, no failure ($((SECONDS - run_start)) s with start-up)"
done
