#!/usr/bin/env bash
# Builds the two Rust tunnels issue 8 compares terrier with, rathole and
# bore, from crates.io into bench/rivals/bin, for `terrier-bench rivals`.
# `rathole` is built with its TCP transport only (no TLS/noise/websocket
# features): the transport the plain figures use. `rathole-tls` is the
# same version with its `tls` feature, for the TLS figures (`rivals
# --tls`); rathole 0.5.0 has no rustls feature, its TLS is native-tls,
# i.e. the system OpenSSL, so that build needs `apt-get install
# libssl-dev pkg-config`. Takes ~5 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)/rivals"
cargo install --root "$root" bore-cli --version 0.6.0
cargo install --root "$root" rathole --version 0.5.0 --no-default-features --features server,client
# A second install root, since both builds are the same crate and binary
# name; its binary is copied beside the others under another name.
cargo install --root "$root/tls" rathole --version 0.5.0 --no-default-features --features server,client,tls
cp "$root/tls/bin/rathole" "$root/bin/rathole-tls"
echo "installed into $root/bin: $(ls "$root/bin" | tr '\n' ' ')"
