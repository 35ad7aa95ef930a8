"""The model: load a merged model dir (local or gs://) and generate for a batch of prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from common.prompts import extract_sql, load_template, render_prompt


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]

    @property
    def batch_key(self) -> tuple:
        """Requests with the same sampling settings can share a forward pass."""
        return (self.temperature, self.top_p)


@dataclass(frozen=True)
class Item:
    prompt: str
    params: GenParams
    sql_only: bool  # a question/context instance: return the SQL alone


@dataclass(frozen=True)
class Prediction:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"

    def to_dict(self) -> dict:
        return {"text": self.text, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason}


class Engine:
    def __init__(self, model_dir: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.template = load_template(model_dir)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))

    def render(self, question: str, context: str) -> str:
        if self.template is None:
            raise ValueError(f"{self.model_dir} has no prompt_template.json: send {{'prompt': ...}} instances")
        return render_prompt(self.template, question, context)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    @torch.inference_mode()
    def generate(self, items: list[Item]) -> list[Prediction]:
        """One forward pass for a batch of items that share temperature and top_p."""
        params = items[0].params
        enc = self.tokenizer([i.prompt for i in items], return_tensors="pt", padding=True).to(self.model.device)
        max_new = max(i.params.max_tokens for i in items)
        sample = params.temperature > 0
        out = self.model.generate(
            **enc, max_new_tokens=max_new, do_sample=sample, temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for item, tokens, n_prompt in zip(items, new_tokens.tolist(), prompt_lens, strict=True):
            tokens = tokens[: item.params.max_tokens]
            finish = "length"
            if self.tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(self.tokenizer.eos_token_id)]
                finish = "stop"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            for s in item.params.stop:
                if s in text:
                    text, finish = text.split(s, 1)[0], "stop"
            if item.sql_only:
                text = extract_sql(text)
            results.append(Prediction(text, int(n_prompt), len(tokens), finish))
        return results


def resolve_model_dir(storage_uri: str | None, model_dir: str, cache: Path | None = None) -> str:
    """AIP_STORAGE_URI (gs://) is copied to local disk; otherwise the local MODEL_DIR."""
    if storage_uri:
        from common import layout, storage

        return str(storage.download_prefix(storage_uri, (cache or layout.scratch("models")) / storage.cache_key(storage_uri)))
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"no model at {model_dir}: run `make train` first, or set MODEL_DIR / AIP_STORAGE_URI")
    return model_dir
