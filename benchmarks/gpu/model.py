"""The random CodeLlama-shaped model every measurement loads, its examples, and what one run shares (`Bench`)."""

from __future__ import annotations

import functools
import gc
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from common.atomic import atomic_dir

SMALL = {"vocab_size": 32016, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 4096}  # CPU: real vocabulary and example lengths, small body
CODELLAMA_7B = {"vocab_size": 32016, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 16384, "rope_theta": 1e6}
TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 1024}


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly the model's vocabulary ("t3" is token 3), pad 0, bos 1, eos 2: what the
    lab's collator and the serving engine need, where CodeLlama's own tokenizer cannot be downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left")


def save_random_model(shape: dict, out: Path, dtype: torch.dtype) -> Path:
    """A CodeLlama-shaped model with random weights and a tokenizer, saved like a downloaded one (weights do not change
    speed); kept at `out` for the next process."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in its final dtype, on the GPU when there is one: a 7B in seconds
    try:
        with torch.device("cuda" if torch.cuda.is_available() and dtype != torch.float32 else "cpu"):
            model = LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    finally:
        torch.set_default_dtype(default)
    with atomic_dir(out, keep_existing=True) as tmp:  # another process that saved it first wins; a failure leaves nothing
        model.save_pretrained(tmp)
        synthetic_tokenizer(shape["vocab_size"]).save_pretrained(tmp)
    del model
    gc.collect()
    return out


@functools.lru_cache(maxsize=4)
def base_params(model_dir: Path) -> int:
    """The base model's parameter count, from its config: what MFU counts. A loaded 4-bit model's packed weights would
    count half (two values a byte), and LoRA's own parameters are not the model's work."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def examples(n: int, vocab: int, tiny: bool, seed: int = 0):
    """Lab-like examples (prompt masked from the kit's loss), the same for every setup."""
    from trainer.data import IGNORE, Tokenized

    rng = random.Random(seed)
    prompt, answer = (12, 4) if tiny else (140, 28)
    out = []
    for _ in range(n):
        p, a = rng.randint(prompt * 3 // 4, prompt * 5 // 4), rng.randint(answer * 3 // 4, answer * 5 // 4)
        ids = [rng.randint(3, vocab - 1) for _ in range(p + a)]
        out.append(Tokenized(ids, [IGNORE] * p + ids[p:]))
    return out


@dataclass(frozen=True)
class Bench:
    """What every measurement of one run shares, resolved once in main()."""
    model_dir: Path
    device: str
    tiny: bool
    vocab: int
    steps: int
    step_examples: int
    eval_rows: int


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
