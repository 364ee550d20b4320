#!/usr/bin/env bash
# Records which functions the release terrierd and terrier run, in the order
# the release build should place them (scripts/code-layout/<triple>.txt, read
# by scripts/release-build.sh): first what runs from start until a device is
# online and idle, then what a short load adds (visitors through the vhost
# and a TCP port, with a pool of data sockets).
#
# Why: the kernel maps a program's code 64 KiB at a time around each page it
# first runs (fault-around), so a few hundred functions spread over 10 MiB
# of .text made ~6 MiB of it resident. Placed side by side they take
# ~2 MiB (bench/RESULTS.md, step 13).
#
# The list holds mangled symbol names, which stay the same across code edits
# but change with the toolchain, the target, the release profile or a
# dependency's version: release-build.sh says how much of the list it found,
# and this script (run by hand, ~3 min plus the build) makes a new one.
# ThinLTO's `.llvm.<number>` suffixes also change from machine to machine;
# scripts/layout-link.sh matches those at link time, so they need no new list.
#
#   scripts/code-layout.sh             # release build, then record
#   NO_BUILD=1 scripts/code-layout.sh  # record with the binaries already built
#
# Needs valgrind (callgrind), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
case "$(uname -m)" in
  x86_64 | aarch64) triple="$(uname -m)-unknown-linux-gnu" ;;
  *) echo "code-layout.sh: $(uname -m) is not x86_64 or aarch64" >&2; exit 1 ;;
esac
for tool in valgrind callgrind_control curl python3; do
  command -v "$tool" >/dev/null || { echo "code-layout.sh: $tool is missing" >&2; exit 1; }
done
[ -n "${NO_BUILD:-}" ] || scripts/release-build.sh
bin="$root/target/$triple/release"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server_port="$(free_port)"
quiet_port="$(free_port)"
web_port="$(free_port)"
mkdir -p "$work/www" && head -c 100 /dev/zero | tr '\0' x >"$work/www/index.html"
python3 -m http.server "$web_port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)

callgrind() { # callgrind <name> <program> <args...>
  local name=$1
  shift
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.cg" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
# As deployed: a config file, info-level logs (the default; warn-level
# runs a subset), the per-address handshake limit on (--set to its default
# value, so the override code runs too).
printf '[limits]\nmax_pending_streams = 64\n' >"$work/terrierd.toml"
callgrind terrierd "$bin/terrierd" --config "$work/terrierd.toml" --listen "127.0.0.1:$server_port" \
  --data-dir "$work/data" --domain localhost --tcp-bind 127.0.0.1 --tcp-ports 20000-29999 \
  --set limits.control_handshakes_per_ip_per_minute=600
server_pid=${pids[-1]}
# As the benchmark runs it: warn-level logs, no config file. Logging at
# another level runs other functions while idle.
callgrind terrierd-quiet "$bin/terrierd" --listen "127.0.0.1:$quiet_port" --data-dir "$work/data-quiet" \
  --domain localhost --tcp-bind 127.0.0.1 --tcp-ports 30000-30999 --log warn \
  --set limits.control_handshakes_per_ip_per_minute=0
quiet_pid=${pids[-1]}
for port in "$server_port" "$quiet_port"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
done
# Its agent has the benchmark's services: HTTP and two TCP ports.
"$bin/terrier" --server "http://127.0.0.1:$quiet_port" --name layout-quiet --http "127.0.0.1:$web_port" \
  --tcp "web=127.0.0.1:$web_port" --tcp "bulk=127.0.0.1:$web_port" --log warn >"$work/terrier-quiet.log" 2>&1 &
pids+=($!)
quiet_agent_pid=${pids[-1]}
callgrind terrier "$bin/terrier" --server "http://127.0.0.1:$server_port" --name layout \
  --http "127.0.0.1:$web_port" --tcp "web=127.0.0.1:$web_port" --pool 2 --output json --log warn
agent_pid=${pids[-1]}

connected=""
for _ in $(seq 300); do
  connected="$(grep -m1 '"event":"connected"' "$work/terrier.log" || true)"
  [ -n "$connected" ] && break
  sleep 0.2
done
[ -n "$connected" ] || { echo "code-layout.sh: the agent did not connect:" >&2; tail -20 "$work"/*.log >&2; exit 1; }
read -r subdomain tcp_port < <(python3 -c 'import json, sys
event = json.loads(sys.argv[1])
print(event["subdomain"], event["tcp"][0]["port"])' "$connected")

# Idle: a few heartbeats, then the first dump (start and idle; the quiet
# terrierd's agent is online by then too).
sleep 4
callgrind_control -d "$server_pid" "$agent_pid" "$quiet_pid" >/dev/null 2>&1

# A short load, bounded: 30 visits through the vhost, 30 through the TCP port.
for _ in $(seq 30); do
  curl -sf -o /dev/null -H "Host: $subdomain.localhost" "http://127.0.0.1:$server_port/"
  curl -sf -o /dev/null "http://127.0.0.1:$tcp_port/"
done
kill -INT "$agent_pid" "$server_pid" "$quiet_agent_pid" "$quiet_pid"
wait "$agent_pid" "$server_pid" "$quiet_agent_pid" "$quiet_pid" 2>/dev/null || true

mkdir -p scripts/code-layout
python3 - "$work" "$bin" "scripts/code-layout/$triple.txt" <<'EOF'
"""Functions callgrind saw run, idle dump first, then what the load added,
then what callgrind cannot see; only names the binaries define, each once."""
import glob, re, subprocess, sys

work, bindir, out = sys.argv[1:4]
defined = []
for program in ("terrierd", "terrier"):
    nm = subprocess.run(["nm", "--defined-only", f"{bindir}/{program}"], capture_output=True, text=True, check=True)
    defined += [f[2] for f in (line.split() for line in nm.stdout.splitlines()) if len(f) == 3 and f[1] in "tTiW"]
known = set(defined)

def ran(path):
    """Names of the functions in one callgrind dump ("fn=" and "cfn=" lines
    name a function the first time they mention it)."""
    names = []
    for line in open(path, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
        if m:
            names.append(m.group(1))
    return names

ordered, seen, counts = [], set(), []
def add(names, label):
    before = len(ordered)
    for name in names:
        if name in known and name not in seen:
            seen.add(name)
            ordered.append(name)
    counts.append(f"{label} {len(ordered) - before}")

# cg.1 is the idle dump, cg the final one. One list orders both binaries,
# so terrierd's idle and load come before the agent's idle: the agent's
# idle functions that terrierd also holds (tokio, std) would otherwise sit
# between terrierd's idle code and its load code, resident for nothing
# (176 KiB), where terrierd's load code that the agent holds is 41 KiB.
for program, phase in (("terrierd", "cg.1"), ("terrierd-quiet", "cg.1"), ("terrierd", "cg"),
                       ("terrierd-quiet", "cg"), ("terrier", "cg.1"), ("terrier", "cg")):
    paths = glob.glob(f"{work}/{program}.{phase}")
    if not paths:
        sys.exit(f"code-layout.sh: no callgrind dump {program}.{phase}")
    add(ran(paths[0]), f"{program} {'idle' if phase == 'cg.1' else 'load'}")

# valgrind's CPU has no AVX-512 or SHA extensions, so code that picks a
# routine by CPU (glibc's memmove_avx512_..., xxh3's ..._avx512, sha1's
# x86_sha) ran another variant there: add every variant of what ran. Two
# names are variants when they match once the CPU words are left out.
cpu_word = re.compile(r"^(avx512\w*|avx2|avx|evex\w*|sse\d*|ssse3|erms|unaligned|rtm|x86|sha|shani|soft|aesni|clmul|bmi2|ifunc)$")
demangled = subprocess.run(["c++filt"], input="\n".join(defined), capture_output=True, text=True).stdout.splitlines()
def base(plain):
    """The name without its hash and CPU words; None if it has no CPU word."""
    words = [w for w in re.split(r"::|_+", re.sub(r"::h[0-9a-f]{16}$", "", plain)) if w]
    kept = [w for w in words if not cpu_word.match(w)]
    return "/".join(kept) if len(kept) < len(words) else None
bases = [base(plain) for plain in demangled]
ran_bases = {b for name, b in zip(defined, bases) if name in seen and b is not None}
# In nm's order, not a set's (Python randomises string hashes per run).
add([name for name, b in zip(defined, bases) if b in ran_bases], "CPU variants")
# Process start runs before valgrind's first count.
add([n for n in defined if n in ("_start", "__libc_start_main_impl", "__libc_start_call_main")
     or n.endswith("_ifunc")], "start")

with open(out, "w") as f:
    f.write("".join(name + "\n" for name in ordered))
print(f"code-layout.sh: {len(ordered)} functions ({', '.join(counts)}) -> {out}")
EOF
