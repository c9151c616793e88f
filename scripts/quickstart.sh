#!/usr/bin/env bash
# The README's first command: build, mint trust material once, start the control plane on its
# embedded defaults (no Ory binaries), and show it healthy and answering an authorized call.
set -euo pipefail
cd "$(dirname "$0")/.."
trust_dir="${CLAWKER_CP_TRUST_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/clawker/trust}"

echo "==> building"
npm run --silent build
if [ -f "$trust_dir/ca.crt" ]; then
  echo "==> trust material already in $trust_dir (clawker auth init --force to mint anew)"
else
  echo "==> minting trust material"
  npx --no-install clawker auth init --dir "$trust_dir"
fi
echo "==> starting the control plane"
npx --no-install clawker controlplane up --trust-dir "$trust_dir"
echo "==> status"
npx --no-install clawker controlplane status
echo "==> an authorized call (ListAgents)"
npx --no-install clawker controlplane agents
echo
echo "The control plane keeps running in the background; stop it with: npx clawker controlplane down"
