"""Evaluation measurements that no single ``bench/<name>.py`` covers.

Modules (each a ``python -m bench.eval.<name> --json [--save FILE]`` script
with a ``main(argv) -> int``, except the pure helpers):

* :mod:`bench.eval.prompts` - deterministic English prompts from ``pydoc_data.topics`` (pure).
* :mod:`bench.eval.divergence` - first divergent step and top-2 margins of two greedy runs (pure).
* :mod:`bench.eval.decode` - greedy decoding through sharded stages with a codec at the cuts.
* :mod:`bench.eval.disagree` - honest disagreement between replicas (threads, dtype, codec, device).
* :mod:`bench.eval.minilm` - MiniLM sentence-embedding cosine to fp32 per codec and cut count.
* :mod:`bench.eval.memory` - resident weight memory per shard per scheme.
* :mod:`bench.eval.gas_replicas` - gas per job by call for 1, 3 and 5 replicas.
* :mod:`bench.eval.quant` - int8-mixed weights: perplexity / accuracy / top-1 vs fp32.
* :mod:`bench.eval.report` - renders ``bench/REPORT.md`` from the result files (pure).
* :mod:`bench.eval.report_disagree` - the disagreement section and its data-driven conclusions (pure).
* :mod:`bench.eval.report_provenance` - where each result came from; stale and pending files (pure).
"""
