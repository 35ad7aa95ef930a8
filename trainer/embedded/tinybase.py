"""The embedded default's base model: a tiny Llama built offline in a second, deterministically.

A Llama-architecture model created from a config with a structured initialisation (see
`init_copy_heads`), and a tokenizer trained on the bundled corpus. It is saved as a normal
HF model dir and cached, so every later stage loads it with `from_pretrained`.

It has never seen the task, so the base-model check fails and tuning runs, as with the
lab's CodeLlama. It demonstrates the pipeline's mechanics and the gain from tuning; it says
nothing about real model quality. Why no pretraining, and how the design was chosen:
docs/embedded-default.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import torch

from common.atomic import atomic_dir
from common.prompts import LAB_TEMPLATE
from trainer.config import EMBEDDED_ID
from trainer.embedded import sqlgen

# Chosen by measurement on a 2-core CPU (docs/embedded-default.md): small enough to tune in
# minutes, big enough to learn to copy names and values from the prompt.
MODEL_CONFIG = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    # Tied: the output layer reads a token's logit off its own embedding, so a head that moves
    # a token's embedding forward predicts that token, even for a number seen once in training.
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}
# Structured initialisation (docs/embedded-default.md): the upper layers' attention heads start
# as "copy heads" (value/output projections an orthonormal pair, so attending to a token writes
# that token's embedding), and embeddings start large enough (std 0.1) for the tied output layer
# to give a copied token a clear logit. Learning *where* to look is then all that is left; from
# the default init a 2M-parameter model does not discover copying in a CPU's minutes.
COPY_HEADS_FROM_LAYER = 2
EMBED_INIT_STD = 0.1
VOCAB_SIZE = 2048
INIT_SEED = 7
# Words, numbers, single spaces and punctuation are separate pieces, so a name or a number is
# the same token in the question, the schema and the query: copying it is then a token copy.
_SPLIT_PATTERN = r"[A-Za-z]+|\d+|\s|[^A-Za-z\d\s]"
_BUILD_VERSION = 2  # bump when the recipe changes so caches rebuild


def cache_root() -> Path:
    return Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops-kit"))


def _fingerprint() -> str:
    blob = json.dumps(
        [MODEL_CONFIG, VOCAB_SIZE, INIT_SEED, _SPLIT_PATTERN, COPY_HEADS_FROM_LAYER, EMBED_INIT_STD, _BUILD_VERSION, sqlgen.SAMPLE_SEED],
        sort_keys=True,
    )
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


@torch.no_grad()
def init_copy_heads(model, first_layer: int = COPY_HEADS_FROM_LAYER, embed_std: float = EMBED_INIT_STD, seed: int = 0) -> None:
    """Make every head of layers >= first_layer a copy head; deterministic for a given seed.

    For each such layer a random orthogonal matrix Q is split across the heads: head h reads
    its slice Q_h of the (normed) residual as its value and writes Q_h^T back, so the heads
    together pass the attended token's representation through unchanged (W_O W_V = I).
    """
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    if cfg.num_key_value_heads != cfg.num_attention_heads:
        raise ValueError("copy-head initialisation needs one value head per attention head")
    g = torch.Generator().manual_seed(seed)
    model.get_input_embeddings().weight.normal_(0.0, embed_std, generator=g)
    for layer in model.model.layers[first_layer:]:
        q, _ = torch.linalg.qr(torch.randn(cfg.hidden_size, cfg.hidden_size, generator=g))
        layer.self_attn.v_proj.weight.copy_(q.T[: cfg.num_attention_heads * head_dim])
        layer.self_attn.o_proj.weight.copy_(q[:, : cfg.num_attention_heads * head_dim])


def build_tiny_base(out_dir: Path, log=print) -> Path:
    """Build and save the tiny base into out_dir (atomically: temp dir then rename)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(INIT_SEED)
    sample = sqlgen.generate(sqlgen.SAMPLE_ROWS, seed=sqlgen.SAMPLE_SEED)
    numbers = " ".join(str(i) for i in range(1000))  # every integer below 1000 becomes one token
    tokenizer = build_tokenizer([LAB_TEMPLATE, numbers] + [f"{r['question']} {r['context']} {r['answer']}" for r in sample])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_CONFIG,
    )
    model = LlamaForCausalLM(config)
    init_copy_heads(model, seed=INIT_SEED)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"building the embedded tiny base ({n_params / 1e6:.1f}M parameters) in {out_dir}; cached for later runs")
    with atomic_dir(out_dir, keep_existing=True) as tmp:  # another process may finish first: keep theirs
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


def resolve_embedded(model_id: str, log=print) -> Path:
    """The local dir of an embedded model id, building it on first use."""
    if model_id != EMBEDDED_ID:
        raise ValueError(f"unknown embedded model {model_id!r}; the only one is {EMBEDDED_ID!r}")
    out = cache_root() / f"tiny-sql-llama-{_fingerprint()}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time: torchrun's ranks start together in a fresh container, and a rank must not load the
    # folder while another is still moving it into place. The others wait here, then find it built.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").is_file():
            build_tiny_base(out, log)
    return out
