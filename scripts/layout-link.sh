#!/usr/bin/env bash
# The linker scripts/release-build.sh gives rustc: cc, with the code layout
# list (scripts/code-layout/<triple>.txt) matched to the functions being
# linked.
#
# Why: ThinLTO renames each local function it shares between modules to
# `<name>.llvm.<number>`, and the numbers changed when the same commit was
# built on another machine. The list then missed those functions (125 of
# 2,896), and a terrierd built with 93% of its list found idled at 6.0 MiB
# instead of 4.0 (bench/RESULTS.md, steps 17 and 18). Here each listed
# name is matched by what comes before `.llvm.` against the symbols of the
# objects on the command line, and the linker gets the names it really
# has, in the list's order.
#
# rustc calls it with cc's arguments; `-Wl,--symbol-ordering-file=<list>`
# among them names the list (its path changes with its contents, so cargo
# links again when the list changes). Without a list or objects on the
# command line (rustc passing them in an @file, say) it is plain cc.
set -euo pipefail
linker=cc
args=()
list=""
objects=()
for arg in "$@"; do
  case "$arg" in
    -Wl,--symbol-ordering-file=*) list="${arg#-Wl,--symbol-ordering-file=}" ;;
    *)
      args+=("$arg")
      case "$arg" in *.o | *.rlib) [ -f "$arg" ] && objects+=("$arg") ;; esac
      ;;
  esac
done
[ -n "$list" ] && [ "${#objects[@]}" -gt 0 ] || exec "$linker" "$@"

matched="$(mktemp)"
trap 'rm -f "$matched"' EXIT
# First the symbols the objects define, grouped by name without `.llvm.*`;
# then, in the list's order, every symbol of each listed name, once. A name
# the objects do not define (the C library's, from -lc) goes as it is.
nm --defined-only "${objects[@]}" 2>/dev/null | awk 'NF == 3 { print $3 }' |
  awk -v list="$list" '
    function stem(name) { sub(/\.llvm\.[0-9]+$/, "", name); return name }
    !($0 in seen) { seen[$0] = 1; s = stem($0); have[s] = (s in have) ? have[s] "\n" $0 : $0 }
    END {
      while ((getline line < list) > 0) {
        s = stem(line)
        if (s in done) continue
        done[s] = 1
        out = (s in have) ? have[s] : line
        print out
      }
    }' >"$matched"
"$linker" "${args[@]}" "-Wl,--symbol-ordering-file=$matched"
