#!/usr/bin/env bash
# Builds the release terrierd and terrier for this machine's CPU as static
# PIE executables (glibc linked in, relative relocations packed as DT_RELR):
# they run on any Linux with that CPU whatever its C library (name lookups
# through NSS modules other than files and dns, e.g. mDNS, still dlopen the
# machine's), and each idles about 1 MiB smaller than the dynamic build
# (bench/RESULTS.md, step 12).
# The functions they run are laid out side by side (scripts/code-layout.sh),
# which keeps their idle memory small.
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
flags="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs"

# The functions the programs run at start, idle and under load go side by
# side at the front of .text (scripts/code-layout.sh made the list). The
# list is copied under a name holding its hash, so a new list changes the
# flags and cargo links again. scripts/layout-link.sh, the linker then,
# matches the list's ThinLTO-renamed functions (`.llvm.<number>`) to the
# names this build gave them.
layout="scripts/code-layout/$triple.txt"
if [ -f "$layout" ]; then
  sum="$(sha256sum "$layout" | cut -c1-16)"
  mkdir -p target
  cp "$layout" "target/code-layout-$sum.txt"
  flags="$flags -C link-arg=-Wl,--symbol-ordering-file=$PWD/target/code-layout-$sum.txt -C link-arg=-Wl,--no-warn-symbol-ordering"
  linker_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER"
  export "$linker_var=$PWD/scripts/layout-link.sh"
fi
export "$flags_var=$flags"
echo "building: cargo build --release --target $triple -p terrier-server -p terrier-agent ($flags_var=${!flags_var})"
cargo build --release --target "$triple" -p terrier-server -p terrier-agent "$@"

# A list made by another toolchain, profile or dependency version, or
# before a code change, names functions that no longer exist: say how much
# of it still applies (names compared without ThinLTO's `.llvm.<number>`).
# A few percent matters: with 93% of the names found, terrierd idled at
# 6.0 MiB instead of 4.0 (bench/RESULTS.md, step 17).
if [ -f "$layout" ]; then
  stems() { sed 's/\.llvm\.[0-9]*$//' | sort -u; }
  listed="$(stems <"$layout" | wc -l)"
  found="$({ nm --defined-only "target/$triple/release/terrierd"; nm --defined-only "target/$triple/release/terrier"; } |
    awk 'NF == 3 { print $3 }' | stems | comm -12 - <(stems <"$layout") | wc -l)"
  echo "code layout: $found of $listed listed functions found"
  if [ "$found" -lt $((listed * 98 / 100)) ]; then
    echo "code layout: the list is stale (idle memory grows by megabytes); make a new one with scripts/code-layout.sh" >&2
  fi
fi
