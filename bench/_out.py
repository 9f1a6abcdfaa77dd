"""How every benchmark ends: stamp the result with its provenance, save it, print it.

The headline rule for repeated measurements lives here too: a repeated
measurement keeps every run under ``runs`` and reports each field's median
(:func:`summarize`); a result that has runs says so with ``"headline": "median"``.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from bench.provenance import meta

HEADLINE = "median"  # the value reported for repeated runs: their median, every run kept


def summarize(runs: dict[str, list[float]]) -> dict:
    """Each field's median over its runs, with the runs kept under ``runs`` (pure).

    ``runs`` maps a field to its value in every run, in run order (index i is run i). Run values
    carry at most 3 decimals, so rounding the median to 4 only drops float noise."""
    if not runs or any(not v for v in runs.values()):
        raise ValueError("summarize needs at least one run of every field")
    return {**{k: round(statistics.median(v), 4) for k, v in runs.items()}, "runs": runs}


def emit(result: dict, save: str | None, as_json: bool) -> int:
    """Add ``meta`` (:func:`bench.provenance.meta`) to ``result``, write it to ``save`` (indented,
    replacing the file in one step) if given, and print it: one line with ``as_json`` (the last
    line of output, for scripts), indented otherwise. Returns 0."""
    out = {**result, "meta": meta()}
    if save:
        path = Path(save)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp, path)
    print(json.dumps(out) if as_json else json.dumps(out, indent=1))
    return 0
