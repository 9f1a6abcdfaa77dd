#!/usr/bin/env bash
# Run the Solidity tests with forge (native binary from npm) over solcjs; no network.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
forge="$here/../node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
[ -x "$forge" ] || { echo "forge not found at $forge; run 'npm ci'" >&2; exit 1; }
cd "$here"
export FOUNDRY_SOLC="$here/solc-shim" FOUNDRY_OFFLINE=true
exec "$forge" test "$@"
