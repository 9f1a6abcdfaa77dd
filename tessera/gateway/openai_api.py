"""The OpenAI-compatible routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``.

Every response carries a ``tessera`` object: the job id, the outcome of consensus,
the agreeing replicas, the payouts and the transaction hashes. With ``stream: true``
the text arrives as server-sent events while the head produces it; those chunks are
marked ``"verified": false`` (signed by one head, not yet settled); the last chunk
before ``[DONE]`` carries the settled outcome, and the settled text where it differs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from proto.errors import JobError, ModelError, PlanError, RoutingError, TesseraError
from proto.types import decode_output
from tessera.gateway.service import Event, Gateway
from tessera.jobresult import JobResult
from tessera.units import fmt_eth
from worker.node.payload import tokenizer


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = ""


class _Sampled(BaseModel):
    """What completions and chat requests share: the model and how to sample it."""

    model_config = ConfigDict(extra="allow")  # OpenAI options we do not use are accepted and ignored
    model: str
    max_tokens: int | None = None
    temperature: float = Field(0.0, ge=0, le=10)
    top_p: float = Field(1.0, ge=0.001, le=1)  # nucleus sampling, steps of 0.001; 1 = off
    top_k: int = Field(0, ge=0, le=1_000_000)  # extension (as vLLM): the k most likely tokens only; 0 = off
    repetition_penalty: float = Field(1.0, ge=0.001, le=10)  # extension (as vLLM); 1 = off
    seed: int | None = Field(None, ge=0, lt=2**64)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


class CompletionRequest(_Sampled):
    prompt: str | list[str]


class ChatRequest(_Sampled):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = None


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, (RoutingError,)):
        return 503, "no_route"
    if isinstance(exc, (ModelError,)):
        return 404, "model_not_found"
    if isinstance(exc, (JobError, PlanError)):
        return 400, "invalid_request_error"
    if isinstance(exc, TesseraError):
        return 502, "tessera_error"
    return 500, "server_error"


def settled(res: JobResult) -> dict:
    """The ``tessera`` object of a settled job."""
    return {"job_id": res.job_id, "outcome": res.outcome, "verified": res.outcome in ("agreed", "verified"),
            "consensus": f"{len(res.winners)}/{len(res.plan.replicas)}", "winners": list(res.winners),
            "reason": res.reason, "fee_wei": str(res.fee), "refund_wei": str(res.refund),
            "payouts": {k: str(v) for k, v in res.payouts.items()},
            "tx": {"submit": res.submit_tx, "finalize": res.finalize_tx}}


class TextStream:
    """Token ids in, text deltas out (held back while the tail of the text is a partial character)."""

    def __init__(self, tok):
        self.tok, self.ids, self.sent = tok, [], ""

    def feed(self, ids, restart: bool = False) -> str:
        if restart:
            self.ids, self.sent = [], ""
        self.ids.extend(ids)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


def build(gw: Gateway) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": gw.models()}

    @api.post("/v1/completions")
    def completions(req: CompletionRequest, request: Request):
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            return error(400, "this gateway takes one prompt per request (each one is a paid job)")
        return _serve(gw, req.model, prompts[0], req.max_tokens, req, chat=False)

    @api.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request):
        try:
            prompt = gw.chat_prompt(req.model, [m.model_dump(exclude_none=True) for m in req.messages])
        except TesseraError as exc:
            return error(*_status(exc)[:1], str(exc))
        return _serve(gw, req.model, prompt, req.max_completion_tokens or req.max_tokens, req, chat=True)

    return api


def _serve(gw: Gateway, model: str, prompt: str, max_tokens: int | None, req, chat: bool):
    try:
        directory = gw.model_dir(model)
        n = gw.max_tokens(max_tokens)
    except ModelError as exc:
        return error(404, str(exc), "model_not_found")
    except TesseraError as exc:
        return error(400, str(exc))
    tok = tokenizer(str(directory))
    cancel = threading.Event()
    events = gw.run(model, prompt, n, req.temperature, req.seed or 0, stream=req.stream, cancel=cancel,
                    top_k=req.top_k, top_p=req.top_p, repetition_penalty=req.repetition_penalty)
    shape = _Shape(model, chat, len(tok(prompt)["input_ids"]), n, tok)
    if req.stream:
        return StreamingResponse(_sse(events, shape, tok, cancel), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    last: Event | None = None
    for ev in events:
        last = ev
    if last is None or last.kind == "error":
        exc = last.data if last else TesseraError("the job did not finish")
        status, kind = _status(exc)
        return error(status, str(exc), kind)
    res: JobResult = last.data
    if not res.winners:
        return error(502, f"job {res.job_id}: nobody paid: {res.reason}; {fmt_eth(res.refund)} credited back to "
                     "the gateway's requester account (`tessera job withdraw`)", "tessera_no_majority")
    return shape.full(res)


class _Shape:
    """OpenAI's object shapes for one request."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int, max_tokens: int, tok):
        self.model, self.chat, self.prompt_tokens, self.max_tokens, self.tok = model, chat, prompt_tokens, max_tokens, tok
        self.created = int(time.time())
        self.id = ""

    def finish_reason(self, ids: list[int]) -> str:
        return "length" if len(ids) >= self.max_tokens else "stop"

    def usage(self, n: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    def full(self, res: JobResult) -> dict:
        ids = decode_output(res.output)
        text = self.tok.decode(ids, skip_special_tokens=True)
        self.id = f"tessera-job-{res.job_id}"
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": self.finish_reason(ids), "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": self.finish_reason(ids), "logprobs": None}
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice], "usage": self.usage(len(ids)),
                "tessera": settled(res)}

    def chunk(self, delta: str | None, finish: str | None = None, extra: dict | None = None,
              role: bool = False) -> str:
        if self.chat:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                {"content": delta} if delta is not None else {})
            choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        body = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice]}
        if extra is not None:
            body["tessera"] = extra
        return f"data: {json.dumps(body)}\n\n"


def _sse(events: Iterator[Event], shape: _Shape, tok, cancel: threading.Event) -> Iterator[str]:
    text = TextStream(tok)
    try:
        for ev in events:
            if ev.kind == "submitted":
                shape.id = f"tessera-job-{ev.data.job_id}"
                yield shape.chunk(None, role=True, extra={"job_id": ev.data.job_id, "verified": False,
                                                          "tx": {"submit": ev.data.tx_hash}})
            elif ev.kind == "tokens":
                delta = text.feed(ev.data.ids, ev.data.restart)
                if delta or ev.data.restart:
                    yield shape.chunk(delta, extra={"job_id": int(shape.id.rsplit("-", 1)[1]), "verified": False,
                                                    "replica": ev.data.replica, "node": ev.data.node,
                                                    "restart": ev.data.restart})
            elif ev.kind == "error":
                status, kind = _status(ev.data)
                yield f"data: {json.dumps({'error': {'message': str(ev.data), 'type': kind, 'code': status}})}\n\n"
            elif ev.kind == "result":
                res: JobResult = ev.data
                if not res.winners:
                    msg = (f"job {res.job_id}: nobody paid: {res.reason}; {fmt_eth(res.refund)} credited back to "
                           "the gateway's requester account")
                    yield f"data: {json.dumps({'error': {'message': msg, 'type': 'tessera_no_majority'}})}\n\n"
                    continue
                ids = decode_output(res.output)
                final = tok.decode(ids, skip_special_tokens=True)
                extra = settled(res)
                extra["preview_matches"] = final.startswith(text.sent)
                if extra["preview_matches"] and final != text.sent:  # what the preview had not shown yet
                    yield shape.chunk(final[len(text.sent):], extra={"job_id": res.job_id, "verified": True})
                elif not extra["preview_matches"]:
                    extra["text"] = final  # the settled text replaces the preview
                yield shape.chunk(None, shape.finish_reason(ids), extra)
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()
