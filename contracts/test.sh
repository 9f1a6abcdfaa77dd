#!/usr/bin/env bash
# Run the Solidity tests with forge (native binary from npm) over solcjs; no network.
# Settings, build and cache are chain.build's: contracts/foundry.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
forge="$here/../node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
[ -x "$forge" ] || { echo "forge not found at $forge; run 'npm ci'" >&2; exit 1; }
cd "$here"
exec "$forge" test "$@"
