//! Copies the CYW43439 Wi-Fi firmware blobs into the build. They are not on
//! crates.io (Infineon's licence; embassy's repository ships them in
//! `cyw43-firmware/`): put `43439A0.bin`, `43439A0_clm.bin` and
//! `nvram_rp2040.bin` in `cyw43-firmware/` next to this file. Without them the
//! firmware still builds (empty placeholders, with a warning) but stops at
//! boot with the LED blinking fast — useful only to check that the code builds.

use std::path::PathBuf;

const BLOBS: [&str; 3] = ["43439A0.bin", "43439A0_clm.bin", "nvram_rp2040.bin"];

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("cyw43-firmware");
    for blob in BLOBS {
        let src = dir.join(blob);
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = std::fs::read(&src).unwrap_or_else(|_| {
            println!("cargo:warning=cyw43-firmware/{blob} is missing: building with an empty placeholder (see README.md)");
            Vec::new()
        });
        std::fs::write(out.join(blob), bytes).expect("write blob");
    }
    for var in ["WIFI_SSID", "WIFI_PASSWORD", "TERRIER_SERVER", "TERRIER_PORT", "TERRIER_NAME", "TERRIER_TOKEN"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // cortex-m-rt's link.x includes memory.x from the linker search path.
    std::fs::copy("memory.x", out.join("memory.x")).expect("memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
}
