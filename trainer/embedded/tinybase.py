"""The embedded default's base model: a tiny Llama that "knows SQL", built offline in about a minute.

A real foundation model has read a lot of SQL but was never taught this prompt format;
that is why the lab's base CodeLlama writes SQL-looking but wrong answers. The tiny base
reproduces that: a Llama-architecture model created deterministically from a config,
with a tokenizer trained on the bundled corpus, then pretrained (all parameters) on SQL
text alone (schemas followed by queries, never the question/answer prompt). The result
is saved as a normal HF model dir and cached, so every later stage loads it with
`from_pretrained` and later runs skip the build.

It demonstrates the pipeline's mechanics and the gain from tuning; it says nothing about
real model quality.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from trainer.data import IGNORE, Tokenized, collate
from trainer.embedded import sqlgen
from trainer.prompts import LAB_TEMPLATE

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_ID = "embedded:tiny-sql-llama"

# Chosen by measurement on a 2-core CPU (docs/embedded-default.md): small enough to
# pretrain in about a minute, big enough to learn to copy names from the prompt.
MODEL_CONFIG = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}
VOCAB_SIZE = 2048
PRETRAIN = {"docs": 3000, "seed": 7, "steps": 300, "batch_size": 8, "lr": 3e-3, "warmup": 20, "max_length": 512}
# Words, numbers, single spaces and punctuation are separate pieces, so a name or a number is
# the same token in the question, the schema and the query: copying it is then a token copy.
_SPLIT_PATTERN = r"[A-Za-z]+|\d+|\s|[^A-Za-z\d\s]"
_BUILD_VERSION = 1  # bump when the recipe changes so caches rebuild


def cache_root() -> Path:
    return Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops-kit"))


def _fingerprint() -> str:
    blob = json.dumps([MODEL_CONFIG, VOCAB_SIZE, PRETRAIN, _SPLIT_PATTERN, _BUILD_VERSION, sqlgen.SAMPLE_SEED], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_tokenizer(texts: list[str]):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", padding_side="left"
    )


def _pretrain(model, tokenizer, docs: list[str], log) -> list[float]:
    """Full-parameter causal-LM pretraining on SQL text; returns the loss history."""
    cfg = PRETRAIN
    items = []
    for d in docs:
        ids = tokenizer(d).input_ids + [tokenizer.eos_token_id]
        if len(ids) <= cfg["max_length"]:
            items.append(Tokenized(ids, [IGNORE] + ids[1:]))
    g = torch.Generator().manual_seed(cfg["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg["warmup"]:
            return (step + 1) / cfg["warmup"]
        progress = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses, t0 = [], time.monotonic()
    for step in range(cfg["steps"]):
        idx = torch.randint(len(items), (cfg["batch_size"],), generator=g).tolist()
        batch = collate([items[i] for i in idx], cfg["max_length"], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step == 0:
            log(f"  pretraining tiny base: step {step + 1}/{cfg['steps']} loss {loss.item():.3f} ({time.monotonic() - t0:.0f}s)")
    return losses


def build_tiny_base(out_dir: Path, log=print) -> Path:
    """Build, pretrain and save the tiny base into out_dir (atomically: temp dir then rename)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(PRETRAIN["seed"])
    sample = sqlgen.generate(sqlgen.SAMPLE_ROWS, seed=sqlgen.SAMPLE_SEED)
    # Never pretrain on a query of the bundled sample: the base must not know any answer.
    docs = sqlgen.sql_corpus(PRETRAIN["docs"], seed=PRETRAIN["seed"], exclude_answers={r["answer"] for r in sample})
    numbers = " ".join(str(i) for i in range(1000))  # every integer below 1000 becomes one token
    tok_texts = [LAB_TEMPLATE, numbers] + docs + [f"{r['question']} {r['context']} {r['answer']}" for r in sample]
    tokenizer = build_tokenizer(tok_texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_CONFIG,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"building the embedded tiny base ({n_params / 1e6:.1f}M parameters) in {out_dir}; cached for later runs")
    losses = _pretrain(model, tokenizer, docs, log)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "pretraining.json").write_text(
        json.dumps({"recipe": PRETRAIN, "final_loss": losses[-1], "docs": len(docs)}, indent=2), encoding="utf-8"
    )
    if out_dir.exists():  # another process finished first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def resolve_embedded(model_id: str, log=print) -> Path:
    """The local dir of an embedded model id, building it on first use."""
    if model_id != EMBEDDED_ID:
        raise ValueError(f"unknown embedded model {model_id!r}; the only one is {EMBEDDED_ID!r}")
    out = cache_root() / f"tiny-sql-llama-{_fingerprint()}"
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        build_tiny_base(out, log)
    return out
