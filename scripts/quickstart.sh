#!/usr/bin/env bash
# The README's first command: build, mint trust material once, start the control plane on its
# embedded defaults (no Ory binaries), and show it healthy and answering an authorized call.
# Runs under `npm run`, so `node` is the project's Node 24. Calls the built entry points directly:
# npm links workspace bins only when their dist/ exists at install time.
set -euo pipefail
cd "$(dirname "$0")/.."
trust_dir="${CLAWKER_CP_TRUST_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/clawker/trust}"
clawker() { node packages/cli/dist/main.js "$@"; }
export CLAWKER_CP_BIN="$PWD/packages/controlplane/dist/main.js"

echo "==> building"
npm run --silent build
if [ -f "$trust_dir/ca.crt" ]; then
  echo "==> trust material already in $trust_dir (clawker auth init --force to mint anew)"
else
  echo "==> minting trust material"
  clawker auth init --dir "$trust_dir"
fi
echo "==> starting the control plane"
clawker controlplane up --trust-dir "$trust_dir"
echo "==> status"
clawker controlplane status
echo "==> an authorized call (ListAgents)"
clawker controlplane agents --trust-dir "$trust_dir"
echo
echo "The control plane runs in the background. Stop it with: npm run clawker -- controlplane down"
