"""The HTTP app on Vertex's custom-container contract: health, predict and Prometheus metrics.

Every request is answered with JSON and a status that metrics and the log record as sent: 400 for a body the
schema refuses (naming the field), 413 past the size limit (counted while reading, chunked bodies too), 408 for
a body that does not arrive within BODY_TIMEOUT_S (the connection is closed; HEADER_TIMEOUT_S bounds headers), 429 with
Retry-After when the server holds as much work as it takes, 503 while the model loads, 504 past the timeout, 500
for a failure of that request alone. A client that closes its connection before its answer has its generation
cancelled at once (its slots freed) and is recorded as 499. Parsing and tokenization run off the event loop, so
health always answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from serving.engine import CacheSize, Engine, GenParams, Item, resolve_model_dir
from serving.schema import ErrorResponse, PredictRequest, PredictResponse, PromptInstance
from serving.settings import Settings

log = logging.getLogger("serving")
INLINE_BYTES = 16 * 1024
CLIENT_CLOSED = 499


class _JsonLines(logging.Formatter):
    """One JSON object a line (Cloud Logging's structured logging); an exception's traceback goes in `stack_trace`,
    where Error Reporting reads it."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": record.getMessage(), **getattr(record, "fields", {})}
        trace = [self.formatException(record.exc_info)] if record.exc_info else []
        if record.stack_info:
            trace.append(self.formatStack(record.stack_info))
        if trace:
            entry["stack_trace"] = "\n".join(trace)
        return json.dumps(entry)


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JsonLines())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class ClientLeft(Exception):
    """The client closed its connection before the answer: recorded as 499 (nginx's "client closed request")."""


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("predict_requests", "Predict requests by HTTP status sent", ["status"], registry=self.registry)
        self.latency = Histogram("predict_latency_seconds", "Predict request latency", registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("batch_size", "Requests generating together when an instance finished", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.generated = Counter("generated_tokens", "Tokens generated", registry=self.registry)
        self.ttft = Histogram("time_to_first_token_seconds", "From admission to the first generated token", registry=self.registry,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.in_flight = Gauge("instances_in_flight", "Instances admitted and not yet answered", registry=self.registry)
        self.queue_depth = Gauge("batch_queue_depth", "Admitted instances beyond what one batch generates at once", registry=self.registry)


class ServerState:
    """The model (once loaded) and the admission count that bounds the work the server holds."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.engine = None
        self.error: str | None = None
        self.in_flight = 0
        self.generating = 0  # instances inside the engine now

    @property
    def capacity(self) -> int:
        return self.settings.max_batch_size + self.settings.max_queue

    def admit(self, n: int) -> None:
        if self.in_flight + n > self.capacity:
            raise BadRequest("server busy: the request queue is full; retry after a second", 429)
        self._set_in_flight(self.in_flight + n)

    def release(self, n: int) -> None:
        self._set_in_flight(self.in_flight - n)

    def _set_in_flight(self, value: int) -> None:
        self.in_flight = value
        self.metrics.in_flight.set(value)
        self.metrics.queue_depth.set(max(0, value - self.settings.max_batch_size))

    def ready_engine(self):
        if self.engine is None:
            raise BadRequest("the model is still loading; retry shortly" if self.error is None else f"the model failed to load: {self.error}", 503)
        failure = _failure(self.engine)
        if failure:
            raise BadRequest(f"the engine stopped: {failure}", 503)
        return self.engine


def _failure(engine) -> str | None:
    check = getattr(engine, "failure", None)
    return check() if check else None


def _default_loader(settings: Settings) -> Engine:
    return Engine(resolve_model_dir(settings.storage_uri, settings.model_dir), CacheSize(max_batch=settings.max_batch_size))


# -- parsing (off the event loop) ---------------------------------------------------------------------------------------

def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(err: ValidationError) -> str:
    """One message naming the field, in the server's own words for the common mistakes."""
    e = err.errors()[0]
    kind, loc = e["type"], tuple(e["loc"])
    if loc[:1] == ("instances",) and len(loc) >= 4:
        loc = loc[:2] + loc[3:]  # ('instances', 0, <the instance shape>, field): the shape is not a field the client sent
    if kind == "json_invalid":
        return f"body is not valid JSON: {e['msg'].removeprefix('Invalid JSON: ')}"
    if not loc:
        return 'body must be a JSON object {"instances": [...], "parameters": {...}}'
    if loc[0] not in ("instances", "parameters"):
        unknown = sorted(str(x["loc"][0]) for x in err.errors() if x["type"] == "extra_forbidden" and len(x["loc"]) == 1)
        return f"unknown top-level field(s) {unknown}: only 'instances' and 'parameters' are accepted"
    if loc == ("instances",):
        return {"missing": "missing 'instances'", "list_type": "'instances' must be a list", "too_short": "'instances' is empty"}.get(kind, e["msg"])
    if loc[0] == "instances" and len(loc) == 2 and kind == "union_tag_not_found":
        value = e.get("input")
        if not isinstance(value, dict):
            return f"instances[{loc[1]}] must be an object, got {type(value).__name__}"
        return f'instances[{loc[1]}] must be {{"prompt": ...}} or {{"question": ..., "context": ...}}'
    if loc[0] == "instances":
        what = "unknown field" if kind == "extra_forbidden" else e["msg"]
        return f"instances[{loc[1]}]: {_field(loc[2:])}: {what}"
    what = "unknown field" if kind == "extra_forbidden" else e["msg"]
    return f"parameters: {_field(loc[1:]) or 'parameters'}: {what}"


def parse(raw: bytes, settings: Settings) -> PredictRequest:
    try:
        body = PredictRequest.model_validate_json(raw)
    except ValidationError as e:
        raise BadRequest(_explain(e)) from None
    if len(body.instances) > settings.max_instances:
        raise BadRequest(f"{len(body.instances)} instances: at most {settings.max_instances} per request")
    return body


def prepare_items(body: PredictRequest, engine, settings: Settings) -> list[Item]:
    """Render and tokenize every instance; a prompt that cannot fit the model's context is refused before it is queued."""
    p = body.parameters
    max_tokens = min(settings.default_max_tokens, settings.max_tokens_cap) if p.max_tokens is None else p.max_tokens
    if not 1 <= max_tokens <= settings.max_tokens_cap:
        raise BadRequest(f"parameters.max_tokens must be between 1 and {settings.max_tokens_cap}, got {max_tokens}")
    params = GenParams(max_tokens, p.temperature, p.top_p, tuple(p.stop))
    items = []
    for i, inst in enumerate(body.instances):
        sql_only = not isinstance(inst, PromptInstance)
        try:
            prompt = inst.prompt if not sql_only else engine.render(inst.question, inst.context)
        except ValueError as e:
            raise BadRequest(f"instances[{i}]: {e}") from None
        limit = engine.context_length - max_tokens
        if len(prompt.encode("utf-8")) > limit * engine.max_token_bytes:  # too long whatever it tokenizes to
            raise BadRequest(f"instances[{i}]: prompt is {len(prompt)} characters, more than the model's context of "
                             f"{engine.context_length} tokens can hold")
        ids = engine.tokenize(prompt)
        if len(ids) > limit:
            raise BadRequest(f"instances[{i}]: prompt is {len(ids)} tokens; with max_tokens {max_tokens} it exceeds the model's "
                             f"context of {engine.context_length} tokens")
        items.append(Item(ids, params, sql_only, prompt))
    return items


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, counted while it arrives (chunked uploads too): 413 as soon as it passes the limit, 408 if it has not
    all arrived within timeout_s; a client that leaves mid-upload is ClientLeft."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"body is {declared} bytes; the limit is {limit}", 413)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BadRequest(f"body is over the {limit}-byte limit", 413)
    except TimeoutError:
        raise BadRequest(f"the body did not arrive within {timeout_s:g}s ({len(body)} bytes came)", 408) from None
    except ClientDisconnect:
        raise ClientLeft() from None
    return bytes(body)


# -- the app ------------------------------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, load_engine: Callable[[Settings], Engine] = _default_loader) -> FastAPI:
    """Build the app; the model loads in the background after start, health says 503 until it can serve."""
    settings = settings or Settings.from_env()
    _setup_logging()
    state = ServerState(settings, Metrics())
    app = FastAPI(title="llmops-kit text-to-SQL", lifespan=_lifespan(state, load_engine))
    app.state.server = state
    _add_routes(app, state)
    return app


def _lifespan(state: ServerState, load_engine):
    def load() -> None:
        try:
            state.engine = load_engine(state.settings)
            log.info("model loaded", extra={"fields": {"model_dir": state.engine.model_dir}})
        except Exception as e:  # health reports it; the process stays up for the logs to be read
            state.error = f"{type(e).__name__}: {e}"
            log.error("model failed to load: %s", state.error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load, daemon=True).start()
        yield
        if state.engine is not None and hasattr(state.engine, "close"):
            state.engine.close()

    return lifespan


def _add_routes(app: FastAPI, state: ServerState) -> None:
    settings, metrics = state.settings, state.metrics
    errors = {code: {"model": ErrorResponse} for code in (400, 408, 413, 429, 500, 503, 504)}

    @app.get(settings.health_route)
    async def health() -> Response:
        if state.engine is not None:
            failure = _failure(state.engine)
            return JSONResponse({"status": "failed", "error": failure}, status_code=503) if failure else JSONResponse({"status": "ok"})
        detail = {"status": "loading"} if state.error is None else {"status": "failed", "error": state.error}
        return JSONResponse(detail, status_code=503)

    @app.post(settings.predict_route, response_model=PredictResponse, responses=errors, openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request) -> Response:
        t0 = time.monotonic()
        outcome = {"status": 500, "instances": 0, "tokens": 0, "ttft_ms": None}
        try:
            body = await _predict(request, state, outcome)
            outcome["status"] = 200
            return JSONResponse(body)
        except ClientLeft:
            outcome["status"] = CLIENT_CLOSED
            return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the status is what metrics and the log record
        except BadRequest as e:
            outcome["status"] = e.status
            headers = {"Retry-After": "1"} if e.status in (429, 503) else {}
            if e.status in (408, 413):  # the rest of the body may still be on its way: not worth reading, close
                headers["Connection"] = "close"
            return JSONResponse({"error": {"code": e.status, "message": str(e)}}, status_code=e.status, headers=headers)
        except Exception as e:  # this request failed; the server and every other request carry on
            log.exception("predict failed")
            return JSONResponse({"error": {"code": 500, "message": f"generation failed: {type(e).__name__}: {e}"}}, status_code=500)
        finally:
            elapsed = time.monotonic() - t0
            metrics.requests.labels(status=str(outcome["status"])).inc()
            metrics.latency.observe(elapsed)
            log.info("predict", extra={"fields": {"status": outcome["status"], "latency_ms": round(elapsed * 1000, 1),
                                                  "instances": outcome["instances"], "generated_tokens": outcome["tokens"],
                                                  "ttft_ms": outcome["ttft_ms"]}})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _predict(request: Request, state: ServerState, outcome: dict) -> dict:
    settings, metrics = state.settings, state.metrics
    engine = state.ready_engine()
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(f"content type must be application/json, got {ctype or 'none'!r}")
    raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    if len(raw) <= INLINE_BYTES:  # a typical request: parsing it here costs less than a hop to a worker thread
        items = prepare_items(parse(raw, settings), engine, settings)
    else:  # a big body is parsed and tokenized off the event loop, so health and small requests keep being answered
        items = await asyncio.to_thread(lambda: prepare_items(parse(raw, settings), engine, settings))
    outcome["instances"] = len(items)
    state.admit(len(items))
    try:
        state.generating += len(items)
        work = asyncio.ensure_future(asyncio.wait_for(_generate_all(engine, items, state), settings.request_timeout_s))
        left = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((work, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            if not work.done():  # the client left (or this handler was cancelled): stop generating for nobody
                work.cancel()
                await asyncio.wait((work,))  # the engine has taken the requests out of its batch before slots are released
        if work.cancelled():
            raise ClientLeft()
        try:
            preds = work.result()
        except asyncio.TimeoutError:
            raise BadRequest(f"prediction took longer than {settings.request_timeout_s:.0f}s", 504) from None
    finally:
        state.generating -= len(items)
        state.release(len(items))
    outcome["tokens"] = sum(p.completion_tokens for p in preds)
    ttfts = [p.ttft_s for p in preds if getattr(p, "ttft_s", None) is not None]
    if ttfts:
        outcome["ttft_ms"] = round(max(ttfts) * 1000, 1)
        for t in ttfts:
            metrics.ttft.observe(t)
    metrics.generated.inc(outcome["tokens"])
    if settings.log_prompts:
        log.debug("prompts", extra={"fields": {"prompts": [i.prompt for i in items]}})
    return {"predictions": [p.to_dict() for p in preds]}


async def _disconnected(request: Request) -> None:
    """Returns when the client closes its connection (the body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _generate_all(engine, items: list[Item], state: ServerState) -> list:
    """Every instance of a request; if one fails the others are cancelled (asyncio.gather would leave them generating)."""
    tasks = [asyncio.ensure_future(_generate(engine, it, state)) for it in items]
    try:
        return await asyncio.gather(*tasks)
    finally:  # failed or cancelled: none keeps generating, and each has left the engine's batch before this returns
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks)


async def _generate(engine, item: Item, state: ServerState):
    prediction = await engine.generate(item)
    state.metrics.batch_size.observe(max(1, min(state.generating, state.settings.max_batch_size)))
    return prediction
