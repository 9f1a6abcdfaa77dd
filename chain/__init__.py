"""Tessera's on-chain half in Python: build, deploy, devnet control, typed client, events."""
