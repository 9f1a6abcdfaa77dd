"""The gateway's ASGI app: the OpenAI routes, the explorer and ``/health``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from tessera.gateway import explorer, openai_api
from tessera.gateway.service import Gateway


def create_app(gw: Gateway) -> FastAPI:
    app = FastAPI(title="Tessera gateway", version="1", docs_url="/docs", redoc_url=None)
    app.include_router(openai_api.build(gw))
    app.include_router(explorer.build(explorer.Explorer(gw.client)))

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/explorer")

    @app.get("/health")
    def health():
        return {"status": "ok", "chain_id": gw.client.deployment.chain_id, "block": gw.client.w3.eth.block_number,
                "requester": gw.client.address}

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": {"message": f"invalid request: {where}", "type": "invalid_request_error",
                                       "param": None, "code": None}}, 400)

    return app
