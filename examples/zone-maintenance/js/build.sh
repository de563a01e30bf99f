#!/usr/bin/env bash
# Build the JavaScript zone-maintenance plugin: ./build.sh OUT.wasm
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"

cd "$here"
# Install the locked dependency tree when node_modules is missing or older than
# the lockfile (npm writes node_modules/.package-lock.json on every install).
# Not `npm ci`: the registry here lacks some other platforms' optional native
# packages (e.g. @rolldown/binding-win32-x64-msvc), which npm leaves out of the
# lockfile, and `npm ci` then refuses the lockfile as out of sync.
# `npm install --no-save` installs the same locked versions and writes nothing.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null
fi
node build.mjs "$out"
