#!/usr/bin/env bash
# Builds the two Rust tunnels issue 8 compares terrier with, rathole and
# bore, from crates.io into bench/rivals/bin, for `terrier-bench rivals`.
# rathole is built with its TCP transport only (no TLS/noise/websocket
# features, so no OpenSSL headers are needed): the transport it is
# benchmarked with. Takes ~3 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)/rivals"
cargo install --root "$root" bore-cli --version 0.6.0
cargo install --root "$root" rathole --version 0.5.0 --no-default-features --features server,client
echo "installed into $root/bin: $(ls "$root/bin" | tr '\n' ' ')"
