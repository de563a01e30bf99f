#!/usr/bin/env bash
# Build the C zone-maintenance plugin: ./build.sh OUT.wasm
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
wit="$repo/wit/trellis-plugin-0.4.0"
out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
build="$here/build"

# clang-14 with the WASI sysroot and wasm-ld, installed only when missing.
missing=()
for pkg in clang-14 wasi-libc libclang-rt-14-dev-wasm32 lld; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# wit-bindgen 0.63.0, C generator only.
export PATH="$HOME/.cargo/bin:$PATH"
if [[ "$(wit-bindgen --version 2>/dev/null)" != "wit-bindgen-cli 0.63.0" ]]; then
    cargo install --quiet wit-bindgen-cli --version 0.63.0 --locked --no-default-features --features c
fi

# Generated bindings and the core module live in build/ (not in git).
rm -rf "$build"
mkdir -p "$build"
# (wit-bindgen reports each file it writes: show that only on failure.)
if ! log="$(wit-bindgen c "$wit" --world scheduler-plugin --out-dir "$build" 2>&1)"; then
    echo "$log" >&2
    exit 1
fi
clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wall -Wextra -Werror \
    -I "$build" -o "$build/zone-core.wasm" \
    "$here/zone.c" "$build/scheduler_plugin.c" "$build/scheduler_plugin_component_type.o" \
    -Wl,--strip-all

# Core module -> component (wit_component::ComponentEncoder, validating).
(cd "$repo" && cargo xtask encode "$build/zone-core.wasm" "$out")
