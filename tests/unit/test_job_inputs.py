"""What `tessera job submit` sends: `--chat` makes the gateway's prompt (the model's own chat template),
`--input-file` sends a user model's tensor bytes, and one-pass and embedding jobs get their defaults."""

from __future__ import annotations

from types import SimpleNamespace

import click
import pytest

from proto import paths
from proto.errors import ModelError
from proto.types import ExecSpec, WeightsMode, sampling_fields
from tessera.cli.job import _job_input, job_defaults
from tessera.gateway.service import Gateway
from worker.node.payload import chat_prompt

MODEL = paths.models_dir() / "smollm2-135m"
needs_model = pytest.mark.skipif(not (MODEL / "tokenizer.json").exists(), reason="smollm2-135m is not in the store")


@needs_model
def test_cli_chat_is_the_gateways_prompt(monkeypatch):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    data = _job_input("smollm2-135m", None, "Capital of France?", "Be brief.", None)
    text = data.decode()
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?")
    assert text.endswith("<|im_start|>assistant\n")  # the answer starts right after it
    gw = Gateway(client=None)
    monkeypatch.setattr(gw, "model_dir", lambda name: MODEL)
    assert gw.chat_prompt("smollm2-135m", messages) == text == chat_prompt(MODEL, messages)


@needs_model
def test_cli_chat_without_a_system_message_uses_the_templates_default():
    text = _job_input("smollm2-135m", None, "Hi", None, None).decode()
    assert text == chat_prompt(MODEL, [{"role": "user", "content": "Hi"}]) and text.count("<|im_start|>user\nHi") == 1


def test_input_file_is_sent_as_it_is(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00\x01\x02\x03")
    assert _job_input("m", None, None, None, None, str(tmp_path / "x.bin")) == b"\x00\x01\x02\x03"
    with pytest.raises(click.UsageError, match="exactly one of"):
        _job_input("m", "a prompt", None, None, None, str(tmp_path / "x.bin"))


def test_one_pass_jobs_run_one_step_and_embeddings_default_to_fp32_activations():
    assert job_defaults("causal-lm", False, 32, None) == (32, "int8-outlier")
    assert job_defaults(None, False, 32, None) == (32, "int8-outlier")  # not installed here: the usual defaults
    assert job_defaults("embedding", False, 32, None) == (1, "fp32")
    assert job_defaults("embedding", False, 32, "int8-outlier") == (1, "int8-outlier")  # a choice is kept
    assert job_defaults("classifier", False, 32, None) == (1, "int8-outlier")
    assert job_defaults(None, True, 32, "bf16") == (1, "bf16")


def test_input_options_are_exclusive_and_system_needs_chat():
    with pytest.raises(click.UsageError, match="exactly one of"):
        _job_input("m", "a prompt", "a message", None, None)
    with pytest.raises(click.UsageError, match="exactly one of"):
        _job_input("m", None, None, None, None)
    with pytest.raises(click.UsageError, match="--system goes with --chat"):
        _job_input("m", "a prompt", None, "sys", None)


@needs_model
def test_chat_needs_the_model_in_the_store_and_a_template(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="tessera model fetch nope"):
        _job_input("nope", None, "hi", None, None)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "tokenizer_config.json").write_text("{}")
    (tmp_path / "plain" / "tokenizer.json").write_text((MODEL / "tokenizer.json").read_text())
    with pytest.raises(ModelError, match="has no chat template"):
        chat_prompt(tmp_path / "plain", [{"role": "user", "content": "hi"}])


def test_sampling_flags_become_the_jobs_execution_spec(monkeypatch):
    """`job submit --top-k/--top-p/--repetition-penalty` land in the spec word the contract stores
    (x 1000, 0 = off), next to --dtype and --int8-weights; out-of-range values never reach the chain."""
    from click.testing import CliRunner

    import tessera.cli.job as job_cli
    from tessera import requester
    from tessera.cli.main import cli

    sent = []
    monkeypatch.setattr(job_cli, "make_client", lambda *a: None)
    monkeypatch.setattr(job_cli, "require_model", lambda *a: None)
    monkeypatch.setattr(job_cli, "fee_floor_early", lambda *a: None)
    monkeypatch.setattr(job_cli, "_local_kind", lambda model: "causal-lm")
    monkeypatch.setattr(requester, "run_job", lambda client, spec, **kw: sent.append(spec) or SimpleNamespace(job_id=1))
    base = ["job", "submit", "--model", "m", "--prompt", "hi", "--fee", "0.01"]
    r = CliRunner().invoke(cli, base + ["--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
                                        "--repetition-penalty", "1.25", "--int8-weights"])
    assert r.exit_code == 0, r.output
    spec = ExecSpec.unpack(sent[-1].spec.pack())
    assert (spec.top_k, spec.top_p_milli, spec.repetition_penalty_milli, spec.weights) == (
        40, 900, 1250, WeightsMode.INT8_MIXED)
    assert CliRunner().invoke(cli, base).exit_code == 0
    assert sent[-1].spec == ExecSpec()  # every filter off is the plain spec (0s on chain)
    for bad in (["--top-p", "0"], ["--top-p", "1.5"], ["--top-k", "-1"], ["--repetition-penalty", "11"]):
        r = CliRunner().invoke(cli, base + bad)
        assert r.exit_code == 2 and "Invalid value" in r.output and len(sent) == 2


def test_sampling_fields_round_to_the_contracts_units():
    assert sampling_fields() == {"top_k": 0, "top_p_milli": 0, "repetition_penalty_milli": 0}
    assert sampling_fields(5, 0.95, 0.8) == {"top_k": 5, "top_p_milli": 950, "repetition_penalty_milli": 800}
    assert sampling_fields(top_p=0.0001, repetition_penalty=0.9996) == {  # never rounded to "off" by accident
        "top_k": 0, "top_p_milli": 1, "repetition_penalty_milli": 0}
