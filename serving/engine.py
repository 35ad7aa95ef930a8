"""The model behind the server: transformers' continuous batching with a paged KV cache.

Requests join the running batch at any step and leave when they hit EOS, one of their stop strings, or their
max_tokens; nothing waits for the longest member of a batch. Greedy requests (temperature 0) run on one
continuous-batching manager; sampling requests on a second one with per-request temperature and top_p (the library
decides greedy vs sampling per manager). A request's failure fails only that request: sampling numbers are checked
before a request reaches the loop, and a generation step that raises anyway fails the requests in that step (each
retried once, alone, so only the one that breaks it fails) while the loop carries on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from common.prompts import extract_sql, load_template, render_prompt

log = logging.getLogger("serving")

# Below this a temperature is greedy, as vLLM treats it (vllm/v1/sample/sampler.py, _SAMPLING_EPS): dividing logits by
# a smaller one overflows float32 (1e-39 is a float32 denormal) and sampling from the result fails.
SAMPLING_EPS = 1e-5

# Where a question's SQL ends (extract_sql keeps the first statement): generation stops there instead of running on.
SQL_ENDS = ("\n###", "\n\n", ";")


class EngineError(RuntimeError):
    """Generation failed for one request."""


class StepFailed(EngineError):
    """The generation step this request was part of raised; every request in that step got this error."""


STEP_FAILED = "generation step failed: "
REPLACEMENT = "\ufffd"  # what tokenizers decode bytes that are not a whole character to


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]

    @property
    def sampling(self) -> bool:
        return self.temperature >= SAMPLING_EPS

    def check(self) -> None:
        """Numbers the sampler can use, or EngineError for this request (the HTTP schema refuses them first)."""
        for name, value, ok in (("temperature", self.temperature, lambda v: v >= 0),
                                ("top_p", self.top_p, lambda v: 0 < v <= 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
                raise EngineError(f"{name} {value!r} cannot be sampled with")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise EngineError(f"max_tokens {self.max_tokens!r} must be a positive integer")


@dataclass(frozen=True)
class Item:
    prompt_ids: list[int]
    params: GenParams
    sql_only: bool  # a question/context instance: return the SQL alone
    prompt: str = ""


@dataclass(frozen=True)
class Completion:
    """What the engine produced for one prompt; the app answers with schema.Prediction, its wire form (without ttft_s)."""
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    ttft_s: float | None = None  # time to the first generated token (not part of the response)

    def to_dict(self) -> dict:
        return {"text": self.text, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason}


@dataclass(frozen=True)
class CacheSize:
    """The paged KV cache. On a GPU the library sizes it from free memory; on a CPU it is set here (its default
    would reserve for a GPU's worth of tokens and crawl)."""

    max_batch: int = 32  # requests generated together
    page_size: int = 16
    max_batch_tokens: int = 512  # tokens one forward pass takes (prefill chunks and decode steps together)


class Engine:
    def __init__(self, model_dir: str, cache: CacheSize = CacheSize()) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        gpu = torch.cuda.is_available()
        dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").eval()
        if gpu:
            self.model.to("cuda")
        self.template = load_template(model_dir)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        # The longest token's bytes: a prompt longer than context_length of these cannot fit, tokenized or not.
        self.max_token_bytes = max(len(t.encode("utf-8")) for t in self.tokenizer.get_vocab()) or 1
        self.eos = self.tokenizer.eos_token_id
        self.cache, self.gpu = cache, gpu
        self._managers: dict[bool, object] = {}
        self._retry_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._manager(sampling=False)  # greedy is the common case: ready before the first request

    # -- managers ------------------------------------------------------------------------------------------------------

    def _manager(self, sampling: bool):
        manager = self._managers.get(sampling)
        if manager is not None:
            return manager
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        # Temperature/top_p need a non-neutral default for the per-request processors to exist at all.
        generation = GenerationConfig(do_sample=sampling, temperature=0.7 if sampling else None, top_p=0.95 if sampling else None,
                                      eos_token_id=self.eos, pad_token_id=self.tokenizer.pad_token_id or self.eos, max_new_tokens=256)
        sizing = ({"max_memory_percent": 0.4} if self.gpu else  # two managers share the GPU
                  {"page_size": self.cache.page_size, "max_batch_tokens": self.cache.max_batch_tokens,
                   "num_blocks": self.cache.max_batch * -(-self.context_length // self.cache.page_size)})
        config = ContinuousBatchingConfig(max_requests_per_batch=self.cache.max_batch, per_request_processors=sampling,
                                          use_async_batching=False if not self.gpu else None, **sizing)
        manager = self.model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)
        _isolate_step_failures(manager)
        manager.start()
        self._managers[sampling] = manager
        return manager

    def failure(self) -> str | None:
        """Why the engine cannot serve any more (a generation thread died), or None."""
        for manager in self._managers.values():
            fatal = manager.background_thread_status.fatal_error
            if fatal is not None:
                return f"generation loop stopped: {fatal}"
        return None

    def close(self) -> None:
        for manager in self._managers.values():
            manager.stop(block=True, timeout=10)

    # -- requests ------------------------------------------------------------------------------------------------------

    def render(self, question: str, context: str) -> str:
        if self.template is None:
            raise ValueError(f"{self.model_dir} has no prompt_template.json: send {{'prompt': ...}} instances")
        return render_prompt(self.template, question, context)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids

    def text(self, ids: list[int]) -> str:
        """The text of generated tokens, in whole characters. A byte-level tokenizer (byte-level BPE, or SentencePiece
        byte fallback) decodes bytes that do not make a character (generation stopped inside one, or went on to other
        text) to U+FFFD; those are left out rather than shown as `�`."""
        return self.tokenizer.decode(ids, skip_special_tokens=True).replace(REPLACEMENT, "")

    def _increment(self, ids: list[int], prefix: int, read: int) -> tuple[str, tuple[int, int]]:
        """The text ids[read:] add to ids[:read], and the offsets for the next call: incremental detokenization as
        text-generation-inference and vLLM do it. A few tokens before the new ones are decoded with them (a token's text
        can depend on its neighbours), and nothing is added while the new bytes end inside a character."""
        before = self.tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = self.tokenizer.decode(ids[prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            return after[len(before):].replace(REPLACEMENT, ""), (read, len(ids))
        return "", (prefix, read)

    def _stop_plan(self, stops: tuple[str, ...]) -> tuple[list[int], tuple[str, ...]]:
        """Stop strings that are one token end generation like EOS does (no per-token checking); the rest are watched."""
        ends, watched = [self.eos], []
        for s in stops:
            ids = self.tokenizer(s, add_special_tokens=False).input_ids
            if len(ids) == 1 and self.tokenizer.decode(ids) == s:
                ends.append(ids[0])
            else:
                watched.append(s)
        return ends, tuple(watched)

    async def generate(self, item: Item) -> Completion:
        """Generate for one item as part of the running batch; cancelled with the request if it is.

        If a generation step fails, every request in it fails; each is retried once, one retry at a time, so the
        request that broke the step fails again (alone with its error) and the others are answered."""
        item.params.check()
        try:
            return await self._generate_once(item)
        except StepFailed:
            loop = asyncio.get_running_loop()
            if self._retry_lock is None or self._retry_lock[0] is not loop:
                self._retry_lock = (loop, asyncio.Lock())
            async with self._retry_lock[1]:
                return await self._generate_once(item)

    async def _generate_once(self, item: Item) -> Completion:
        manager = self._manager(item.params.sampling)
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        rid = uuid.uuid4().hex
        ends, watched = self._stop_plan(item.params.stop + (SQL_ENDS if item.sql_only else ()))
        seen = {"offsets": (0, 0), "text": "", "ttft": None}
        longest = max((len(s) for s in watched), default=0)

        def finish(tokens: list[int], reason: str, cut: int | None = None) -> None:
            kept = [t for t in tokens if t not in ends]
            text = self.text(kept)
            if cut is None:  # a one-token stop string ends the text where generation ended
                cut = min((i for s in watched if (i := text.find(s)) >= 0), default=len(text))
            done.set_result(self._prediction(item, text[:cut], len(kept), reason, seen["ttft"]))

        def on_output(output) -> None:  # on the event loop: for each new token (when watching stop strings) or at the end
            if done.done():
                return
            if output.error is not None:
                failed = output.error.startswith(STEP_FAILED)
                done.set_exception((StepFailed if failed else EngineError)(output.error.removeprefix(STEP_FAILED)))
                return
            if output.timestamps and seen["ttft"] is None:
                seen["ttft"] = output.timestamps[0] - output.created_time
            tokens = output.generated_tokens
            if watched:  # decode only what is new; look for a stop string around the seam
                new, seen["offsets"] = self._increment(tokens, *seen["offsets"])
                seen["text"] += new
                tail_from = max(0, len(seen["text"]) - longest - 8)
                if any(s in seen["text"][tail_from:] for s in watched) and not output.is_finished():
                    self._cancel(manager, rid)  # frees its slot in the batch now, not at max_tokens
                    finish(tokens, "stop")
                    return
            if output.is_finished():
                stopped = bool(tokens) and tokens[-1] in ends or len(tokens) < item.params.max_tokens
                finish(tokens, "stop" if stopped else "length")

        manager.register_result_handler(rid, on_output)
        kwargs = {"temperature": float(item.params.temperature), "top_p": float(item.params.top_p)} if item.params.sampling else {}
        manager.add_request(item.prompt_ids, request_id=rid, max_new_tokens=item.params.max_tokens, streaming=bool(watched),
                            record_timestamps=True, eos_token_id=ends, **kwargs)
        try:
            return await done
        except asyncio.CancelledError:  # the request timed out or its client left
            self._cancel(manager, rid)
            raise

    @staticmethod
    def _cancel(manager, rid: str) -> None:
        manager.cancel_request(rid)
        # A cancelled request gets no final output, so its handler would never be cleaned up by the library.
        router = manager.output_router
        with router._lock:
            router.result_handlers.pop(rid, None)

    def _prediction(self, item: Item, text: str, n_tokens: int, finish: str, ttft: float | None) -> Completion:
        return Completion(extract_sql(text) if item.sql_only else text, len(item.prompt_ids), n_tokens, finish, ttft)


def _isolate_step_failures(manager) -> None:
    """A generation step that raises fails the requests in that step alone; the loop goes on.

    transformers 5.24 ends its generation loop on any exception in a step: every request fails and the manager takes
    no more (`fatal_error`), so one request carrying a number the sampler cannot use stopped the server. The library
    has the handling for one step's requests (`ContinuousBatchProcessor.handle_batch_error`: fail them, free their
    cache) but its loop does not call it; this wraps the manager's step and loop body so that it does. With async
    batching (GPU) the failing step's outputs are not the ones the processor holds, so there the library's own
    handling stands; a CUDA-side failure (a device assert) cannot be recovered in-process anyway.
    """
    step, body = manager._generation_step, manager._generation_loop_body

    class _Failed(Exception):
        pass

    def guarded_step() -> None:
        try:
            step()
        except Exception as e:
            raise _Failed() from e

    def guarded_body(batch_processor, bootstrapping: bool) -> bool:
        try:
            return body(batch_processor, bootstrapping)
        except _Failed as failed:
            cause = failed.__cause__
            if batch_processor.use_async_batching:
                raise cause from None
            log.error("generation step failed; its requests fail, the loop goes on",
                      exc_info=(type(cause), cause, cause.__traceback__))
            batch_processor.handle_batch_error(RuntimeError(f"{STEP_FAILED}{type(cause).__name__}: {cause}"))
            return True

    manager._generation_step, manager._generation_loop_body = guarded_step, guarded_body


class ModelDirError(RuntimeError):
    """The model folder is missing or unreadable; the message says which and what to do."""


def resolve_model_dir(storage_uri: str | None, model_dir: str, cache: Path | None = None) -> str:
    """AIP_STORAGE_URI (gs://) is copied to local disk; otherwise the local MODEL_DIR."""
    if storage_uri:
        from common import layout, storage

        return str(storage.download_prefix(storage_uri, (cache or layout.scratch("models")) / storage.cache_key(storage_uri)))
    config = Path(model_dir) / "config.json"
    if not config.exists():
        raise ModelDirError(f"no model at {model_dir}: run `make train` first, or set MODEL_DIR / AIP_STORAGE_URI")
    unreadable = [p for p in [Path(model_dir), *Path(model_dir).iterdir()] if not os.access(p, os.R_OK)]
    if unreadable:
        raise ModelDirError(f"permission denied: {', '.join(str(p) for p in unreadable[:3])} cannot be read by this user "
                            f"(uid {os.getuid()}; the image runs as 10001): make the model readable, e.g. `chmod -R a+rX {model_dir}`")
    return model_dir
