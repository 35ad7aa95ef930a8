"""Load the base model and tokenizer (HF id, local dir, gs:// dir or embedded), and attach LoRA."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from common import layout
from common.errors import KitError
from trainer.config import EMBEDDED_PREFIX, LoraConfig, ModelConfig, TrainingConfig
from trainer.embedded.tinybase import resolve_embedded


class ModelError(KitError, ValueError):
    """The base model cannot be found or loaded as configured."""


def resolve_model_dir(base: str, cache_dir: Path | None = None, log=print) -> str:
    """A local dir for embedded and gs:// models; HF ids are returned as they are."""
    if base.startswith(EMBEDDED_PREFIX):
        try:
            return str(resolve_embedded(base, log))
        except ValueError as e:  # an embedded id that does not exist: the user's setting, named
            raise ModelError(f"model.base: {e}") from None
    if base.startswith("gs://"):
        from common import storage

        dest = (cache_dir or layout.scratch("models")) / storage.cache_key(base)
        return str(storage.download_prefix(base, dest))
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} exists but holds no config.json: not a Hugging Face model dir")
        return str(path)
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise ModelError(f"model path not found: {base}")
    return base  # a hub id


def pick_dtype(precision: str) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _quantization_config(quantization: str, compute_dtype: torch.dtype):
    if quantization == "none":
        return None
    if not torch.cuda.is_available():
        raise ModelError(
            f"model.quantization={quantization} needs bitsandbytes on a CUDA GPU and none is visible; "
            "set model.quantization=none to train in full precision on this machine"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("model.quantization needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=True
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")


def model_load_errors() -> tuple[type[Exception], ...]:
    """What a missing, unreachable or damaged model raises from from_pretrained (a config.json that is JSON but not an
    object: TypeError)."""
    from safetensors import SafetensorError

    return (OSError, ValueError, TypeError, SafetensorError, EnvironmentError)


def load_tokenizer(model_dir: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                                            local_files_only=_offline())
    except model_load_errors() as e:
        raise ModelError(_load_hint(model_dir, e)) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # Llama tokenizers ship without a pad token
    tok.padding_side = "left"  # generation appends on the right
    return tok


def _load_hint(model_dir: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(model_dir).exists():
        damaged = type(err).__name__ == "SafetensorError" or "safetensors" in str(err).lower() or "incomplete" in str(err).lower()
        if damaged:
            return (f"the model files in {model_dir} are damaged or incomplete ({first}): copy the model again, or for a run's "
                    "merged model rerun `llmops merge --run <run>`")
        return f"could not load the model in {model_dir}: {first}"
    if _offline():
        return (f"model {model_dir!r} is not a local folder, and the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1) with no "
                "cached copy: use a local dir, a gs:// dir or embedded:tiny-sql-llama, or unset HF_HUB_OFFLINE.")
    return (f"model {model_dir!r} is not a local folder and could not be fetched from the Hugging Face Hub ({first}). "
            "Check the id (and HF_TOKEN for gated models), or use a local dir, a gs:// dir or embedded:tiny-sql-llama.")


def load_model(model_dir: str, cfg: ModelConfig, precision: str = "auto", for_training: bool = False, local_rank: int = 0):
    """The base causal LM, quantized if configured, in the chosen compute dtype (a quantized one on this rank's GPU)."""
    from transformers import AutoModelForCausalLM

    dtype = pick_dtype(precision)
    quant = _quantization_config(cfg.quantization, dtype)
    kwargs = {"dtype": dtype, "revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code, "local_files_only": _offline()}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": local_rank}  # one whole copy per process (DDP)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except model_load_errors() as e:
        raise ModelError(_load_hint(model_dir, e)) from None
    if quant is not None and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def attach_lora(model, lora: LoraConfig, training: TrainingConfig):
    """Wrap the base with fresh LoRA adapters; only adapter (and modules_to_save) weights train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        modules_to_save=lora.modules_to_save or None,
        # A tied base (the embedded one) stays tied: a trained embedding copy must also be the output layer.
        ensure_weight_tying=bool(getattr(model.config, "tie_word_embeddings", False)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise ModelError(f"lora.target_modules={lora.target_modules!r} does not fit this model: {e}") from None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
