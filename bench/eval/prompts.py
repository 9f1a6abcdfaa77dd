"""Deterministic English prompts taken from Python's own documentation (``pydoc_data.topics``).

Every prompt is the first ``words`` words of a prose sentence: topics in
sorted order, sentences in text order, only lines that read as prose (no
code, no reST markup). The same Python version gives the same prompts.
"""

from __future__ import annotations

import re
from pydoc_data.topics import topics as PYDOC_TOPICS

_SENT_END = re.compile(r"(?<=[.!?])\s+")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-]+$")


def sentences(text: str, min_words: int) -> list[str]:
    """Prose sentences of ``text`` with at least ``min_words`` words (pure)."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        if any(line.startswith(("   ", ">>>", "*", "-", "=")) for line in lines):
            continue  # code blocks, lists, tables, headings
        flat = " ".join(line.strip() for line in lines)
        for s in _SENT_END.split(flat):
            s = s.strip().rstrip(".!?")
            if len(s.split()) >= min_words and _PROSE.match(s):
                out.append(s)
    return out


def english_prompts(n: int, words: int = 12, topics: dict[str, str] | None = None) -> list[str]:
    """``n`` distinct prompts of ``words`` words each, in a fixed order.

    Takes at most two sentences per topic so prompts span many subjects.
    Raises ``ValueError`` if the documentation holds fewer than ``n``.
    """
    if topics is None:
        topics = PYDOC_TOPICS
    seen: set[str] = set()
    out: list[str] = []
    for key in sorted(topics):
        for s in sentences(topics[key], words + 2)[:2]:
            p = " ".join(s.split()[:words])
            if p not in seen:
                seen.add(p)
                out.append(p)
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} prompts of {words} words found in pydoc_data; ask for fewer")
