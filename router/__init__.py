"""The router: a view of the network (chain + probes), pure routing, plans.

* :mod:`router.types`  - the snapshot records routing works on;
* :mod:`router.cost`   - the per-hop cost model (time, price, trust);
* :mod:`router.flow`   - min-cost flow over the interval gadget (the relaxation);
* :mod:`router.search` - branch and bound that makes the relaxation exact;
* :mod:`router.widest` - throughput mode's bottleneck (interval covers);
* :mod:`router.plan`   - :func:`plan_replicas`, the entry point;
* :mod:`router.standby` - :func:`add_standbys`, a spare node per span for failover;
* :mod:`router.advise` - per-block capacity and the span an operator should take;
* :mod:`router.view`   - builds a snapshot from registry records and live probes;
* :mod:`router.source` - snapshot sources: a JSON file, or the chain plus probes;
* :mod:`router.server` - the same over HTTP on 127.0.0.1.
"""
