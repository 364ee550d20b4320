#!/usr/bin/env bash
# Cross-builds the terrier agent (profile release-agent: size-tuned, stripped)
# for the devices it ships to, reports what built and each binary's size, and
# runs the ARM builds under qemu-user against a real terrierd on loopback with
# a visitor (curl) reaching a web service through them.
#
# Run by hand (slow: one fat-LTO build per target), never in CI. A target
# whose standard library or linker cannot be installed is reported and
# skipped. Installs what it can: rustup targets, Debian cross gcc, qemu-user
# (apt-get, when root or with sudo).
#
#   scripts/cross-build.sh                 # every target
#   scripts/cross-build.sh armv7-unknown-linux-gnueabihf   # just these
#   NO_BUILD=1 scripts/cross-build.sh      # report and qemu-run what is built
set -uo pipefail
cd "$(dirname "$0")/.."

PROFILE=release-agent
STABLE_TARGETS=(
  armv7-unknown-linux-gnueabihf
  aarch64-unknown-linux-gnu
  x86_64-pc-windows-gnu
  i686-pc-windows-gnu
  aarch64-unknown-linux-musl
  x86_64-unknown-linux-musl
)
# Tier 3: no prebuilt std; built with nightly -Zbuild-std from rust-src.
# The musl ones want a musl libc for the target; mipsel-unknown-linux-gnu
# links against Debian's cross glibc instead.
NIGHTLY_TARGETS=(
  mipsel-unknown-linux-musl
  mips-unknown-linux-musl
  mipsel-unknown-linux-gnu
)
if [ $# -gt 0 ]; then SELECTED=("$@"); else SELECTED=("${STABLE_TARGETS[@]}" "${NIGHTLY_TARGETS[@]}"); fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() { # best effort: the build of that target reports the failure
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

# The Debian package with the linker, and the linker, per target.
linker_of() {
  case "$1" in
    armv7-unknown-linux-gnueabihf) echo "gcc-arm-linux-gnueabihf arm-linux-gnueabihf-gcc" ;;
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) echo "gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc" ;;
    x86_64-pc-windows-gnu) echo "gcc-mingw-w64-x86-64 x86_64-w64-mingw32-gcc" ;;
    i686-pc-windows-gnu) echo "gcc-mingw-w64-i686 i686-w64-mingw32-gcc" ;;
    mipsel-unknown-linux-musl | mipsel-unknown-linux-gnu) echo "gcc-mipsel-linux-gnu mipsel-linux-gnu-gcc" ;;
    mips-unknown-linux-musl) echo "gcc-mips-linux-gnu mips-linux-gnu-gcc" ;;
  esac
}

declare -A RESULT SIZE
build() {
  local target=$1 toolchain=stable extra=()
  if [ -n "${NO_BUILD:-}" ]; then
    local built="target/$target/$PROFILE/terrier"
    [[ "$target" == *windows* ]] && built="$built.exe"
    if [ -f "$built" ]; then RESULT[$target]="built earlier: $built"; SIZE[$target]=$(stat -c %s "$built")
    else RESULT[$target]="not built (NO_BUILD set)"; fi
    return
  fi
  local pkg linker
  read -r pkg linker <<<"$(linker_of "$target")"
  # The cross gcc also compiles ring's C code: it needs the target's libc headers.
  local libc=""
  case "$linker" in
    arm-linux-gnueabihf-gcc) libc=libc6-dev-armhf-cross ;;
    aarch64-linux-gnu-gcc) libc=libc6-dev-arm64-cross ;;
    mipsel-linux-gnu-gcc) libc=libc6-dev-mipsel-cross ;;
    mips-linux-gnu-gcc) libc=libc6-dev-mips-cross ;;
  esac
  if ! command -v "$linker" >/dev/null 2>&1 || { [ -n "$libc" ] && ! dpkg -s "$libc" >/dev/null 2>&1; }; then
    apt_install "$pkg" $libc
  fi
  if ! command -v "$linker" >/dev/null 2>&1; then
    RESULT[$target]="skipped: linker $linker (Debian $pkg) not installable"; return
  fi
  if [[ " ${NIGHTLY_TARGETS[*]} " == *" $target "* ]]; then
    toolchain=nightly
    if ! rustup component add rust-src --toolchain nightly >/dev/null 2>&1; then
      RESULT[$target]="skipped: nightly rust-src not available (tier 3 needs -Zbuild-std)"; return
    fi
    extra=(-Zbuild-std=std,panic_abort)
  elif ! rustup target add --toolchain stable "$target" >/dev/null 2>&1; then
    RESULT[$target]="skipped: rustup cannot install the $target standard library"; return
  fi
  local env_name
  env_name="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"
  echo "== building $target ($toolchain)"
  if env "$env_name=$linker" cargo "+$toolchain" build --quiet --profile "$PROFILE" -p terrier-agent --bin terrier \
      --target "$target" "${extra[@]}"; then
    local bin="target/$target/$PROFILE/terrier"
    [[ "$target" == *windows* ]] && bin="$bin.exe"
    RESULT[$target]="built: $bin"
    SIZE[$target]=$(stat -c %s "$bin")
  else
    RESULT[$target]="FAILED to build (see the output above)"
  fi
}

for t in "${SELECTED[@]}"; do build "$t"; done

# --- run the ARM agents under qemu-user against a real terrierd ------------
qemu_run() { # target qemu-binary sysroot
  local target=$1 qemu=$2 sysroot=$3 bin="target/$1/$PROFILE/terrier"
  [ -x "$bin" ] || return 0
  command -v "$qemu" >/dev/null 2>&1 || apt_install qemu-user
  if ! command -v "$qemu" >/dev/null 2>&1; then RESULT[$target]+="; qemu: $qemu not installable"; return; fi
  local port web log sub status
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  web=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  local dir; dir=$(mktemp -d)
  echo "hello from the $target agent" > "$dir/index.html"
  target/debug/terrierd --listen "127.0.0.1:$port" --data-dir "$dir/data" --log error & local server=$!
  (cd "$dir" && exec python3 -m http.server "$web" --bind 127.0.0.1 >/dev/null 2>&1) & local httpd=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$web/" && break; sleep 0.1; done
  log="$dir/agent.out"
  "$qemu" -L "$sysroot" "$bin" --server "http://127.0.0.1:$port" --name "qemu-${target%%-*}" \
    --http "$web" --output json --log warn > "$log" 2>&1 & local agent=$!
  for _ in $(seq 1 100); do grep -q '"connected"' "$log" 2>/dev/null && break; sleep 0.1; done
  sub=$(grep -o '"subdomain":"[a-z0-9]*"' "$log" | head -1 | cut -d'"' -f4)
  if [ -n "$sub" ]; then
    status=$(curl -s -o "$dir/page" -w '%{http_code}' -H "Host: $sub.localhost" "http://127.0.0.1:$port/")
    echo "   qemu $target: visitor got $status: $(head -c 80 "$dir/page" | head -1)"
    [ "$status" = 200 ] && RESULT[$target]+="; under $qemu a visitor reached the device (200)" \
      || RESULT[$target]+="; under $qemu the visitor got $status"
  else
    RESULT[$target]+="; under $qemu the agent did not connect: $(head -c 300 "$log")"
  fi
  kill "$agent" "$httpd" "$server" 2>/dev/null; wait "$agent" "$httpd" "$server" 2>/dev/null
  rm -rf "$dir"
}
if [ -x target/debug/terrierd ] || cargo build --quiet -p terrier-server --bin terrierd; then
  qemu_run armv7-unknown-linux-gnueabihf qemu-arm /usr/arm-linux-gnueabihf
  qemu_run aarch64-unknown-linux-gnu qemu-aarch64 /usr/aarch64-linux-gnu
  qemu_run aarch64-unknown-linux-musl qemu-aarch64 /
  qemu_run mipsel-unknown-linux-musl qemu-mipsel /
  qemu_run mipsel-unknown-linux-gnu qemu-mipsel /usr/mipsel-linux-gnu
fi

echo
echo "target                           size (bytes)  result"
for t in "${SELECTED[@]}"; do
  printf '%-32s %12s  %s\n' "$t" "${SIZE[$t]:--}" "${RESULT[$t]}"
done
