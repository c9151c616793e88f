#!/usr/bin/env bash
# Packs the CLI's npm package: `clawker` and the `clawker-cp` it starts, bundled with everything
# they import (no dependencies to fetch), from this checkout's sources. Prints the tarball's path.
# Install it with `npm install -g <tarball>` (README.md, "Install").
# Usage: scripts/pack-cli.sh [OUT_DIR]   (default .output)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
# The project's Node 24 (a dev dependency) runs the bundler; the system Node may be older.
export PATH="$repo/node_modules/.bin:$PATH"
out="${1:-$repo/.output}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
staging="$(mktemp -d "$out/cli-package.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
tsx scripts/install-tree.ts "$staging/package" >/dev/null
tarball="$(cd "$staging" && npm pack ./package --pack-destination "$out" --silent --ignore-scripts)"
printf '%s\n' "$out/$tarball"
