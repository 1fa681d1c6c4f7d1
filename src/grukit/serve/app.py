"""The HTTP application of ``grukit serve``: :func:`create_app` builds it around one loaded model.

Endpoints: ``POST /v1/predict`` (micro-batched), ``POST /v1/generate`` (tokens as Server-Sent Events, language
models), ``POST /v1/sessions``, ``POST /v1/sessions/{id}/step`` and ``DELETE /v1/sessions/{id}`` (a recurrent
state kept between requests), ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /docs`` and
``GET /openapi.json``. Every refusal is JSON ``{"error": "<what was wrong>", ...}`` with a 4xx status.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

import grukit
from grukit.serve.adapters import Served, Unsupported
from grukit.serve.batching import REQUEST_ERRORS, MicroBatcher, ModelWorker
from grukit.serve.metrics import Registry
from grukit.serve.sessions import SessionError, SessionStore


@dataclass
class ServeSettings:
    """The server's limits; each is a flag of ``grukit serve``."""

    max_batch_size: int = 32  # inputs per model call of the micro-batcher; 1: one request at a time
    max_wait_ms: float = 2.0  # how long a batch waits to fill
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    max_items: int = 256  # inputs per request; more get 413
    max_sessions: int = 64  # open sessions; one more gets 429
    session_idle_s: float = 300.0  # a session without a step for this long is closed
    max_new_tokens: int = 1024  # the most /v1/generate may ask for


def _location(error: dict) -> str:
    """``inputs[0]`` for pydantic's ``("body", "inputs", 0)``; union branch names are left out."""
    text = ""
    for part in error.get("loc", ())[1:]:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not any(mark in str(part) for mark in "[]|"):
            text += f".{part}" if text else str(part)
    return text or "body"


def validation_answer(errors: list[dict]) -> JSONResponse:
    """400 for a body that is not JSON, 413 for too many inputs, else 422; the message names the field."""
    kinds = {error.get("type") for error in errors}
    if "json_invalid" in kinds:
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return JSONResponse({"error": f"the request body is not valid JSON: {detail}"}, status_code=400)
    too_long = [e for e in errors if e.get("type") == "too_long" and tuple(e.get("loc", ()))[1:2] == ("inputs",)]
    shown = too_long or errors
    message = "; ".join(f"{_location(error)}: {error.get('msg')}" for error in shown[:3])
    details = [{key: value for key, value in error.items() if key != "input"} for error in shown[:10]]
    return JSONResponse(
        {"error": message, "detail": jsonable_encoder(details)}, status_code=413 if too_long else 422
    )


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over ``max_body_bytes`` with 413 before they reach the app, and counts
    every request's route, status and duration."""

    def __init__(self, app: Any, metrics: Registry, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    @staticmethod
    async def _refuse(send: Any, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, size: str) -> str:
        return f"the request body is {size} bytes; this server takes at most {self.max_body_bytes}"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        self.metrics.in_progress.inc()

        async def send_counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            declared = headers.get(b"content-length", b"0")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._refuse(send_counted, 413, self._too_large(declared.decode()))
                return
            kind = headers.get(b"content-type", b"application/json").decode("latin-1")
            if declared not in (b"0", b"") and "json" not in kind:
                expected = "expected a JSON body (Content-Type: application/json)"
                await self._refuse(send_counted, 415, f"{expected}, got Content-Type {kind!r}")
                return
            chunks, size, more = [], 0, scope["method"] in ("POST", "PUT", "PATCH")
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_body_bytes:
                    await self._refuse(send_counted, 413, self._too_large(f"more than {self.max_body_bytes}"))
                    return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()

            await self.app(scope, replay, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.inc(route=route, method=scope["method"], status=str(status))
            self.metrics.latency.observe(time.perf_counter() - start, route=route)
            self.metrics.in_progress.dec()


REFUSALS = {
    400: "the body is not valid JSON, or the model refuses an input or cannot do what is asked",
    404: "no open session has this id",
    409: "the session is running a step",
    413: "the body is over --max-body-bytes, or holds more than --max-items inputs",
    415: "the body is not sent as JSON",
    429: "--max-sessions sessions are open",
}


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(served: Served, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``served`` (see :func:`grukit.serve.adapters.serve_model`)."""
    settings = settings or ServeSettings()
    metrics = Registry()
    worker = ModelWorker()
    batcher = MicroBatcher(served.predict, worker, metrics, settings.max_batch_size, settings.max_wait_ms / 1000)
    sessions = SessionStore(settings.max_sessions, settings.session_idle_s)
    strict = ConfigDict(strict=True, extra="forbid")

    PredictRequest = create_model(  # noqa: N806 (a class)
        "PredictRequest",
        __config__=strict,
        inputs=(
            list[served.item_type],
            Field(
                min_length=1,
                max_length=settings.max_items,
                description=f"1 to {settings.max_items} inputs; each is {served.item_doc}",
            ),
        ),
    )

    class PredictResponse(BaseModel):
        outputs: list[Any] = Field(description="one output per input, in order (label names for classifiers)")

    class GenerateRequest(BaseModel):
        model_config = strict
        prompt: Annotated[str, Field(min_length=1)] | Annotated[list[int], Field(min_length=1)] = Field(
            description="the text to continue, or its token ids"
        )
        max_new_tokens: int = Field(min(64, settings.max_new_tokens), ge=1, le=settings.max_new_tokens)
        temperature: float = Field(1.0, ge=0, description="0 picks the likeliest token")
        top_k: int | None = Field(None, ge=1, description="sample among the k likeliest tokens")
        top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass")
        seed: int | None = Field(None, ge=0, lt=2**63, description="makes sampling repeatable")

    class StepRequest(BaseModel):
        model_config = strict
        inputs: Annotated[str, Field(min_length=1)] | Annotated[
            list[Any], Field(min_length=1, max_length=settings.max_items)
        ] = Field(description="the next time steps (token ids or a text for a language model)")

    class StepResponse(BaseModel):
        session_id: str
        outputs: list[Any] = Field(description="one output per step (a language model: next-token probabilities)")
        steps: int = Field(description="steps this session has run in all")

    class Refusal(BaseModel):
        error: str = Field(description="what was wrong with the request")

    def refusals(*statuses: int) -> dict:
        """The documented error answers of a route (422 is FastAPI's own)."""
        return {status: {"model": Refusal, "description": REFUSALS[status]} for status in statuses}

    class SessionOpened(BaseModel):
        session_id: str
        idle_timeout_s: float

    async def sweep_sessions() -> None:
        while True:
            await asyncio.sleep(min(1.0, max(0.05, settings.session_idle_s / 4)))
            metrics.sessions_expired.inc(sessions.expire())
            metrics.sessions_open.set(len(sessions))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        sweeper = asyncio.get_running_loop().create_task(sweep_sessions())
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await batcher.stop()
            worker.shutdown()

    app = FastAPI(
        title=f"grukit serve: {served.architecture}",
        version=grukit.__version__,
        description="Predictions, token streams and stateful sessions from one saved grukit model.",
        lifespan=lifespan,
    )
    app.add_middleware(LimitsAndMetrics, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    app.state.metrics, app.state.sessions, app.state.settings = metrics, sessions, settings

    @app.exception_handler(StarletteHTTPException)
    async def http_refusal(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return validation_answer(list(error.errors()))

    @app.exception_handler(Unsupported)
    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    async def refused_by_model(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(SessionError)
    async def session_refused(_: Request, error: SessionError) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(settings.session_idle_s)))} if error.status == 429 else None
        return JSONResponse({"error": str(error)}, status_code=error.status, headers=headers)

    @app.get("/healthz")
    async def healthz() -> dict:
        """The server is up and its model loaded."""
        return {"status": "ok", "architecture": served.architecture, "sessions_open": len(sessions)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> PlainTextResponse:
        """Request counts, latency and batch-size histograms, open sessions and streams (Prometheus text)."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/predict", response_model=PredictResponse, responses=refusals(400, 413, 415))
    async def predict(body: PredictRequest) -> Response:  # type: ignore[valid-type]
        """What the model's ``predict`` returns for ``inputs``, one output per input."""
        inputs = body.inputs  # type: ignore[attr-defined]
        try:
            key = served.batch_key(inputs)
        except REQUEST_ERRORS:
            key = None
        outputs = await batcher.submit(inputs, key)
        # the outputs are plain JSON already: written directly, not re-validated against PredictResponse
        return Response(json.dumps({"outputs": outputs}, ensure_ascii=False), media_type="application/json")

    @app.post(
        "/v1/generate",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "`token` events, then `done`"},
            **refusals(400, 413, 415),
        },
    )
    async def generate(body: GenerateRequest) -> StreamingResponse:
        """Continue ``prompt`` (a language model only), streaming each token as a Server-Sent Event
        ``event: token`` / ``data: {"token": id, "text": piece}``, then ``event: done``."""
        if not served.can_generate:
            raise Unsupported(f"this model ({served.architecture}) does not generate text; serve a GRULanguageModel")
        sampling = {"temperature": body.temperature, "top_k": body.top_k, "top_p": body.top_p, "seed": body.seed}
        tokens = served.tokens(body.prompt, body.max_new_tokens, **sampling)
        first = await worker.call(next, tokens, None)  # a bad prompt is refused here, before the stream starts

        async def events() -> AsyncIterator[str]:
            metrics.streams_open.inc()
            sent, item = 0, first
            try:
                while item is not None:
                    yield _event("token", {"token": item[0], "text": item[1]})
                    sent += 1
                    metrics.tokens.inc()
                    item = await worker.call(next, tokens, None)
                yield _event("done", {"tokens": sent, "finish_reason": "length"})
            finally:  # also when the client went away: free the stream without waiting in a cancelled task
                metrics.streams_open.dec()
                worker.submit(tokens.close)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/sessions", status_code=201, response_model=SessionOpened, responses=refusals(400, 429))
    async def open_session() -> dict:
        """Open a session holding the model's initial recurrent state (429 when ``--max-sessions`` are open)."""
        sessions.check_room()
        state = await worker.call(served.start_state)
        session = sessions.open(state)
        metrics.sessions_open.set(len(sessions))
        return {"session_id": session.id, "idle_timeout_s": settings.session_idle_s}

    @app.post(
        "/v1/sessions/{session_id}/step", response_model=StepResponse, responses=refusals(400, 404, 409, 413, 415)
    )
    async def step_session(session_id: str, body: StepRequest) -> dict:
        """Feed the next steps to the session's model, carrying its state on (409 while another step runs)."""
        session = sessions.get(session_id)
        if session.busy:
            raise SessionError(409, f"session {session_id!r} is running a step; send the next one when it ends")
        session.busy = True
        try:
            outputs, session.state = await worker.call(served.step, session.state, body.inputs)
        finally:
            session.busy = False
            session.last_used = sessions.clock()
        session.steps += len(outputs)
        return {"session_id": session.id, "outputs": outputs, "steps": session.steps}

    @app.delete("/v1/sessions/{session_id}", status_code=204, responses=refusals(404, 409))
    async def close_session(session_id: str) -> Response:
        """Close the session and free its state."""
        sessions.close(session_id)
        metrics.sessions_open.set(len(sessions))
        return Response(status_code=204)

    return app
