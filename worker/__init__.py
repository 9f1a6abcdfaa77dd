"""The operator's node: shard loading, execution, KV sessions, activation codec,
gRPC service, on-chain job loop, commit/reveal."""
