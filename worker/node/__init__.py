"""The on-chain operator daemon (``tessera operator run``).

It joins the parts: the stage (``worker.shard``), the gRPC service
(``worker.server``), the chain client (``chain.client``) and the event
follower (``chain.events``). Modules:

* ``config``    NodeConfig: what a node.toml holds
* ``payload``   job input/output encodings per model kind
* ``chainview`` PlanView over the JobMarket (the chain is the source of truth)
* ``book``      the persisted per-job ledger (what ran, output, salt, txs)
* ``daemon``    NodeDaemon: follow events, run heads, commit, reveal, finalize
"""
