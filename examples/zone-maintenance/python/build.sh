#!/usr/bin/env bash
# Build the Python zone-maintenance plugin: ./build.sh OUT.wasm
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../../wit/trellis-plugin-0.4.0"
# Resolve the output path against the caller's directory before moving.
out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"

# componentize-py 0.25.x, installed only when missing or another version.
if ! componentize-py --version 2>/dev/null | grep -q '^componentize-py 0\.25\.'; then
    python3 -m pip install --quiet --disable-pip-version-check 'componentize-py==0.25.*'
    hash -r
fi

cd "$here"
# componentize-py leaves a __pycache__/ here; .gitignore covers it.
# wit/plugin.wit narrows the contract's `scheduler-plugin` world to its export.
componentize-py --quiet -d "$wit" -d wit -w trellis:zone-maintenance/plugin \
    componentize app -p . -o "$out"
