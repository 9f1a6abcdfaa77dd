"""The README's "Supported models" table is the saved matrix result, and the matrix covers exactly
the architectures the unit tests check, with the outcomes they assert."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.models_matrix import END, START, table
from worker.shard.tiny import ARCHITECTURES, REFUSED

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / "bench" / "results" / "models-matrix.json"


def _rows() -> list[dict]:
    return json.loads(RESULT.read_text())["rows"]


def test_readme_table_is_generated_from_the_saved_result():
    readme = (REPO / "README.md").read_text()
    section = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), readme, re.DOTALL)
    assert section and "## Supported models" in readme[:section.start()]
    assert section.group(1) == table(_rows())


def test_matrix_rows_are_the_tested_architectures_with_the_tested_outcomes():
    rows = {r["architecture"]: r for r in _rows()}
    assert list(rows) == [*ARCHITECTURES, *REFUSED]
    for arch in ARCHITECTURES:  # test_shard_decoders.py asserts these exact at 1, 2 and 3 stages
        r = rows[arch]
        assert r["import"] == "yes" and r["exact"] == {"2-stage": True, "3-stage": True, "multi-process": True}, arch
        assert max(r["max_logit_error"].values()) <= 1e-5, arch
    for arch, (model_type, _, why) in REFUSED.items():  # test_shard_refusals.py asserts these messages
        r = rows[arch]
        assert r["import"] == "refused" and f"model_type {model_type!r}" in r["notes"] and why in r["notes"], arch
