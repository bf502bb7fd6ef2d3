//! uniffi's binding generator, built from the workspace (same version as the scaffolding).
//! See `scripts/build-uniffi.sh` for the one command that generates all three languages.
fn main() {
    uniffi::uniffi_bindgen_main()
}
