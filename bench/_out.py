"""How every benchmark ends: save the result, then print it (one line with --json)."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, save: str | None, as_json: bool) -> int:
    """Write ``result`` to ``save`` (indented) if given; print it as one line with
    ``as_json`` (the last line of output, for scripts), indented otherwise. Returns 0."""
    if save:
        Path(save).write_text(json.dumps(result, indent=1))
    print(json.dumps(result) if as_json else json.dumps(result, indent=1))
    return 0
