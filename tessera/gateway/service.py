"""What the gateway does per request, without HTTP: pay for a job, follow its tokens, settle.

:meth:`Gateway.run` starts :func:`tessera.requester.run_job` on a thread (the fee goes
into escrow from the gateway's requester key) and, once the job is submitted,
follows its heads' signed token events (:func:`tessera.tokens.stream_tokens`); it
yields :class:`Event` objects in order: ``submitted``, ``tokens`` (a preview, signed
by one head, not yet verified) and finally ``result`` (the settled JobResult) or
``error``. The HTTP layer (:mod:`tessera.gateway.openai_api`) turns them into
OpenAI responses.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.client import TesseraChain
from proto.errors import ModelError, TesseraError
from router.types import Mode, Weights
from tessera.requester import JobSpec, Planned, Submitted, run_job
from tessera.tokens import stream_tokens
from worker.node.payload import tokenizer
from worker.store import list_models

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    kind: str  # submitted | tokens | result | error
    data: Any


@dataclass
class Settings:
    """What every job the gateway pays for uses (a request may lower max_tokens only)."""

    fee_wei: int = 10**16  # per request, escrowed until the job settles
    replicas: int = 2  # node-disjoint replicas; the output needs a strict majority of them
    codec: str = "int8-outlier"
    mode: str = "latency"
    weights: Weights | None = None
    commit_window_s: int = 300
    reveal_window_s: int = 120
    default_max_tokens: int = 64
    max_tokens_limit: int = 512


MODELS_TTL_S = 10.0  # how long the list of served models is reused, seconds


@dataclass
class Gateway:
    client: TesseraChain
    settings: Settings = field(default_factory=Settings)
    _served: tuple[float, list[dict]] = (float("-inf"), [])

    def models(self) -> list[dict]:
        """Language models that are registered on this chain and installed here (the gateway needs
        the tokenizer for the chat template and to decode the stream); read again every 10 s."""
        if time.monotonic() - self._served[0] < MODELS_TTL_S:
            return self._served[1]
        out = []
        for m in list_models():
            if m.kind != "causal-lm":
                continue
            try:
                rec = self.client.get_model(m.name)
            except TesseraError:
                continue
            if rec.deprecated or rec.weights_root != m.weights_root:
                continue
            out.append({"id": m.name, "object": "model", "created": 0, "owned_by": rec.publisher,
                        "num_blocks": m.num_blocks})
        self._served = (time.monotonic(), out)
        return out

    def model_dir(self, name: str) -> Path:
        served = {m["id"] for m in self.models()}
        if name not in served:
            raise ModelError(f"model {name!r} is not served by this gateway; GET /v1/models lists those it serves")
        return next(m.directory for m in list_models() if m.name == name)

    def chat_prompt(self, model: str, messages: list[dict]) -> str:
        """The prompt text the model's own chat template makes of ``messages``."""
        tok = tokenizer(str(self.model_dir(model)))
        if not tok.chat_template:
            raise ModelError(f"model {model!r} has no chat template; use /v1/completions with a prompt")
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def max_tokens(self, asked: int | None) -> int:
        n = self.settings.default_max_tokens if asked is None else asked
        if not 1 <= n <= self.settings.max_tokens_limit:
            raise TesseraError(f"max_tokens must be 1..{self.settings.max_tokens_limit} on this gateway, not {n}")
        return n

    def run(self, model: str, prompt: str, max_tokens: int, temperature: float = 0.0, seed: int = 0,
            stream: bool = True, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Pay for one job and yield its events (see the module docstring)."""
        s = self.settings
        spec = JobSpec(model, prompt.encode("utf-8"), max_tokens, s.fee_wei, s.replicas, temperature, seed, s.codec,
                       s.commit_window_s, s.reveal_window_s)
        cancel = cancel or threading.Event()
        q: queue.Queue[Event] = queue.Queue()
        planned: list[Planned] = []

        def on_progress(u) -> None:
            if isinstance(u, Planned):
                planned.append(u)
            elif isinstance(u, Submitted):
                q.put(Event("submitted", u))
                if stream:
                    threading.Thread(target=follow_tokens, args=(planned[-1].plan, u.job_id), daemon=True,
                                     name=f"gw-tokens-{u.job_id}").start()

        def follow_tokens(plan, job_id) -> None:
            endpoints = {n.address: n.endpoint for n in self.client.list_nodes(model)}
            for chunk in stream_tokens(plan, job_id, endpoints, s.commit_window_s, cancel):
                q.put(Event("tokens", chunk))

        def job() -> None:
            try:
                q.put(Event("result", run_job(self.client, spec, mode=Mode(s.mode), weights=s.weights,
                                              on_progress=on_progress)))
            except TesseraError as exc:
                q.put(Event("error", exc))
            except Exception as exc:  # noqa: BLE001 - reported to the HTTP client, logged here
                logger.exception("job for %s failed", model)
                q.put(Event("error", exc))

        threading.Thread(target=job, daemon=True, name="gw-job").start()
        t_end = time.monotonic() + s.commit_window_s + s.reveal_window_s + 120
        try:
            while time.monotonic() < t_end:
                try:
                    ev = q.get(timeout=1.0)
                except queue.Empty:
                    continue
                yield ev
                if ev.kind in ("result", "error"):
                    return
            yield Event("error", TesseraError("the job did not settle within its windows; "
                                              "see `tessera job list --mine` for its state"))
        finally:
            cancel.set()
