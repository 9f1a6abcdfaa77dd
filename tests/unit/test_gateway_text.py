"""The gateway's streamed text: token ids in, text deltas out, never half a character."""

from __future__ import annotations

import pytest

from proto import paths
from tessera.gateway.openai_api import TextStream

MODEL = paths.models_dir() / "smollm2-135m"


@pytest.mark.skipif(not (MODEL / "tokenizer.json").exists(), reason="smollm2-135m is not in the model store")
def test_deltas_add_up_to_the_text_and_never_split_a_character():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    text = "Tokyo is 東京, café au lait ☕ costs 3€."
    ids = tok(text)["input_ids"]
    stream = TextStream(tok)
    deltas = [stream.feed([i]) for i in ids]
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in d for d in deltas)
    assert stream.feed([ids[0]], restart=True) == tok.decode(ids[:1])  # a restart starts the text again
