"""The HTTP app: health, predict (dynamically batched) and Prometheus metrics, on Vertex's routes."""

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

from serving.batcher import Batcher, QueueFull
from serving.engine import Engine, GenParams, Item, resolve_model_dir
from serving.schema import Parameters, PromptInstance, QuestionInstance
from serving.settings import Settings

log = logging.getLogger("serving")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"severity": record.levelname, "message": record.getMessage(), **getattr(record, "fields", {})})


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JsonLines())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("predict_requests", "Predict requests by HTTP status", ["status"], registry=self.registry)
        self.latency = Histogram("predict_latency_seconds", "Predict request latency", registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("batch_size", "Instances per forward pass", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32))
        self.generated = Counter("generated_tokens", "Tokens generated", registry=self.registry)
        self.tokens_per_s = Gauge("generated_tokens_per_second", "Generation throughput of the last batch", registry=self.registry)
        self.queue_depth = Gauge("batch_queue_depth", "Instances waiting for a forward pass", registry=self.registry)


def _default_loader(settings: Settings) -> Engine:
    return Engine(resolve_model_dir(settings.storage_uri, settings.model_dir))


def _parse(raw: bytes, settings: Settings, engine: Engine) -> tuple[list[Item], list[int]]:
    """Validate the body into generation items; every problem is a BadRequest naming it."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object {"instances": [...], "parameters": {...}}')
    unknown = set(body) - {"instances", "parameters"}
    if unknown:
        raise BadRequest(f"unknown top-level field(s) {sorted(unknown)}: only 'instances' and 'parameters' are accepted")
    instances = body.get("instances")
    if instances is None:
        raise BadRequest("missing 'instances'")
    if not isinstance(instances, list):
        raise BadRequest("'instances' must be a list")
    if not instances:
        raise BadRequest("'instances' is empty")
    if len(instances) > settings.max_instances:
        raise BadRequest(f"{len(instances)} instances: at most {settings.max_instances} per request")
    try:
        params = Parameters.model_validate(body.get("parameters") or {})
    except ValidationError as e:
        raise BadRequest("parameters: " + "; ".join(f"{'.'.join(map(str, x['loc'])) or 'parameters'}: {x['msg']}" for x in e.errors())) from None
    max_tokens = min(settings.default_max_tokens, settings.max_tokens_cap) if params.max_tokens is None else params.max_tokens
    if max_tokens <= 0 or max_tokens > settings.max_tokens_cap:
        raise BadRequest(f"parameters.max_tokens must be between 1 and {settings.max_tokens_cap}, got {max_tokens}")
    gen = GenParams(min(max_tokens, settings.max_tokens_cap), params.temperature, params.top_p, tuple(params.stop))
    items, prompt_tokens = [], []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise BadRequest(f"instances[{i}] must be an object, got {type(inst).__name__}")
        try:
            if "prompt" in inst:
                prompt, sql_only = PromptInstance.model_validate(inst).prompt, False
            elif "question" in inst or "context" in inst:
                qi = QuestionInstance.model_validate(inst)
                prompt, sql_only = engine.render(qi.question, qi.context), True
            else:
                raise BadRequest(f'instances[{i}] must be {{"prompt": ...}} or {{"question": ..., "context": ...}}')
        except ValidationError as e:
            raise BadRequest(f"instances[{i}]: " + "; ".join(
                f"{'.'.join(map(str, x['loc']))}: {'unknown field' if x['type'] == 'extra_forbidden' else x['msg']}" for x in e.errors()
            )) from None
        except ValueError as e:
            raise BadRequest(f"instances[{i}]: {e}") from None
        n = engine.count_tokens(prompt)
        if n + gen.max_tokens > engine.context_length:
            raise BadRequest(f"instances[{i}]: prompt is {n} tokens; with max_tokens {gen.max_tokens} it exceeds the model's "
                             f"context of {engine.context_length} tokens")
        items.append(Item(prompt, gen, sql_only))
        prompt_tokens.append(n)
    return items, prompt_tokens


def create_app(settings: Settings | None = None, load_engine: Callable[[Settings], Engine] = _default_loader) -> FastAPI:
    """Build the app; the model loads in the background after start, health says 503 until it can serve."""
    settings = settings or Settings.from_env()
    _setup_logging()
    metrics = Metrics()
    state: dict = {"engine": None, "error": None}

    def run_batch(items: list[Item]) -> list:
        t0 = time.monotonic()
        out = state["engine"].generate(items)
        produced = sum(p.completion_tokens for p in out)
        metrics.generated.inc(produced)
        metrics.tokens_per_s.set(produced / max(time.monotonic() - t0, 1e-9))
        return out

    batcher = Batcher(run_batch, settings.max_batch_size, settings.batch_wait_ms, settings.max_queue,
                      on_batch=lambda n, s: metrics.batch_size.observe(n))

    def load() -> None:
        try:
            state["engine"] = load_engine(settings)
            log.info("model loaded", extra={"fields": {"model_dir": state["engine"].model_dir}})
        except Exception as e:  # health reports it; the process stays up for the logs to be read
            state["error"] = f"{type(e).__name__}: {e}"
            log.error("model failed to load: %s", state["error"])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        threading.Thread(target=load, daemon=True).start()
        yield
        await batcher.stop()

    app = FastAPI(title="llmops-kit text-to-SQL", lifespan=lifespan)
    app.state.metrics = metrics

    @app.get(settings.health_route)
    async def health() -> Response:
        if state["engine"] is not None:
            return JSONResponse({"status": "ok"})
        detail = {"status": "loading"} if state["error"] is None else {"status": "failed", "error": state["error"]}
        return JSONResponse(detail, status_code=503)

    @app.post(settings.predict_route)
    async def predict(request: Request) -> Response:
        t0 = time.monotonic()
        status, n_instances, tokens = 200, 0, 0
        try:
            if state["engine"] is None:
                raise BadRequest("the model is still loading; retry shortly", 503)
            ctype = request.headers.get("content-type", "")
            if not ctype.split(";")[0].strip().lower() == "application/json":
                raise BadRequest(f"content type must be application/json, got {ctype or 'none'!r}")
            declared = int(request.headers.get("content-length") or 0)
            if declared > settings.max_body_bytes:
                raise BadRequest(f"body is {declared} bytes; the limit is {settings.max_body_bytes}", 413)
            raw = await request.body()
            if len(raw) > settings.max_body_bytes:
                raise BadRequest(f"body is {len(raw)} bytes; the limit is {settings.max_body_bytes}", 413)
            items, prompt_tokens = _parse(raw, settings, state["engine"])
            n_instances = len(items)
            try:
                futures = batcher.submit(items, key_of=lambda it: it.params.batch_key)
            except QueueFull:
                raise BadRequest("server busy: the request queue is full; retry after a second", 429) from None
            try:
                preds = await asyncio.wait_for(asyncio.gather(*futures), settings.request_timeout_s)
            except asyncio.TimeoutError:
                for f in futures:
                    f.cancel()
                raise BadRequest(f"prediction took longer than {settings.request_timeout_s:.0f}s", 504) from None
            tokens = sum(p.completion_tokens for p in preds)
            body = {"predictions": [p.to_dict() for p in preds]}
            if settings.log_prompts:
                log.debug("prompts", extra={"fields": {"prompts": [i.prompt for i in items]}})
            return JSONResponse(body)
        except BadRequest as e:
            status = e.status
            headers = {"Retry-After": "1"} if e.status in (429, 503) else None
            return JSONResponse({"error": {"code": e.status, "message": str(e)}}, status_code=e.status, headers=headers)
        finally:
            elapsed = time.monotonic() - t0
            metrics.requests.labels(status=str(status)).inc()
            metrics.latency.observe(elapsed)
            log.info("predict", extra={"fields": {"status": status, "latency_ms": round(elapsed * 1000, 1),
                                                  "instances": n_instances, "generated_tokens": tokens}})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.queue_depth.set(batcher.queue.qsize())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
