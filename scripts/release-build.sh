#!/usr/bin/env bash
# Builds the release terrierd and terrier for this machine's CPU as static
# PIE executables (glibc linked in, relative relocations packed as DT_RELR):
# they run on any Linux with that CPU whatever its C library (name lookups
# through NSS modules other than files and dns, e.g. mDNS, still dlopen the
# machine's), and each idles about 1 MiB smaller than the dynamic build
# (bench/RESULTS.md, step 12).
# This is the build the benchmark measures.
#
#   scripts/release-build.sh            # -> target/<cpu>-unknown-linux-gnu/release/
#   scripts/release-build.sh --locked   # extra arguments go to cargo build
#
# The triple is named explicitly so the static flags reach the binaries only:
# without --target, cargo gives a target's rustflags to build scripts and
# proc-macros too, and a proc-macro cannot be linked statically.
# Needs binutils >= 2.38 (-z pack-relative-relocs); Debian 12 has 2.40.
set -euo pipefail
cd "$(dirname "$0")/.."
case "$(uname -m)" in
  x86_64 | aarch64) triple="$(uname -m)-unknown-linux-gnu" ;;
  *) echo "release-build.sh: $(uname -m) is not x86_64 or aarch64; use cargo build --release" >&2; exit 1 ;;
esac
flags_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
export "$flags_var=-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs"
echo "building: cargo build --release --target $triple -p terrier-server -p terrier-agent ($flags_var=${!flags_var})"
exec cargo build --release --target "$triple" -p terrier-server -p terrier-agent "$@"
