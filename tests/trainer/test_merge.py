"""The merge: exact in fp32, saved in the base model's own dtype (a 7B is bf16: half the bytes of fp32 to copy and load)."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from common.prompts import LAB_TEMPLATE, render_prompt
from trainer.config import LoraConfig, ModelConfig, TrainingConfig
from trainer.merge import MergeError, merge_adapter
from trainer.modeling import attach_lora, load_model


def _safetensors_dtypes(path) -> set[str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _adapter(base_dir, out):
    torch.manual_seed(1)
    model = attach_lora(load_model(str(base_dir), ModelConfig()), LoraConfig(target_modules="all-linear"), TrainingConfig())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained-looking adapter: B starts at zero, which would merge to nothing
    model.save_pretrained(out)
    return out


def test_merged_model_keeps_the_base_dtype(tiny_model, tiny_tokenizer, tmp_path):
    import copy

    base = tmp_path / "base-bf16"
    copy.deepcopy(tiny_model).to(torch.bfloat16).save_pretrained(base)  # a copy: the fixture is shared
    tiny_tokenizer.save_pretrained(base)
    adapter = _adapter(base, tmp_path / "adapter")
    tiny_tokenizer.save_pretrained(adapter)
    prompts = [render_prompt(LAB_TEMPLATE, f"How many rows have id {i}?", "CREATE TABLE t (id INTEGER)") for i in range(6)]
    info = merge_adapter(str(base), adapter, tmp_path / "merged", ModelConfig(), LAB_TEMPLATE, prompts, max_new_tokens=8)
    assert info["greedy_match"] == "6/6", "exact in fp32"
    assert info["dtype"] == "bfloat16" and "greedy_match_saved_dtype" in info
    assert _safetensors_dtypes(tmp_path / "merged" / "model.safetensors") == {"BF16"}
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"


def test_merged_folder_is_what_either_engine_loads(tiny_model_dir, tiny_tokenizer, tmp_path):
    """The kit's server and Model Garden's vLLM (`--model=<merged>`) both load a plain Hugging Face folder: weights in
    safetensors, the architecture in config.json, a fast tokenizer, and no adapter files that would make it look like a
    LoRA; prompt_template.json is how `llmops predict` renders questions for vLLM."""
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    tiny_tokenizer.save_pretrained(adapter)
    merge_adapter(str(tiny_model_dir), adapter, tmp_path / "merged", ModelConfig(), LAB_TEMPLATE, [], max_new_tokens=4)
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "prompt_template.json"} <= files
    assert not [f for f in files if f.startswith("adapter_") or f.endswith((".bin", ".pt"))], files
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["architectures"], "vLLM picks its model class from this"


def test_an_fp32_base_stays_fp32(tiny_model_dir, tiny_tokenizer, tmp_path):
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    tiny_tokenizer.save_pretrained(adapter)
    prompts = [render_prompt(LAB_TEMPLATE, "How many?", "CREATE TABLE t (id INTEGER)")]
    info = merge_adapter(str(tiny_model_dir), adapter, tmp_path / "merged", ModelConfig(), LAB_TEMPLATE, prompts, max_new_tokens=8)
    assert info == {"greedy_match": "1/1", "dtype": "float32"}
    assert _safetensors_dtypes(tmp_path / "merged" / "model.safetensors") == {"F32"}


@pytest.mark.parametrize(("damage", "why"), [
    ({"adapter_model.safetensors": None}, "HFValidationError"), ({"adapter_model.safetensors": b"\0" * 10}, "SafetensorError"),
    ({"adapter_config.json": b"{"}, "JSONDecodeError"), ({"adapter_config.json": b"[]"}, "TypeError"),
    ({"adapter_config.json": b"{}"}, "KeyError"), ({"adapter_config.json": b"\xff\xfe"}, "UnicodeDecodeError"),
    ({"tokenizer.json": None, "tokenizer_config.json": None}, "ValueError"), ({"tokenizer.json": b"{"}, "JSONDecodeError"),
])
def test_a_damaged_adapter_is_named_and_nothing_is_merged(tiny_model_dir, tiny_tokenizer, tmp_path, damage, why):
    """`llmops merge --run` on an adapter/ copied in part or edited: a traceback from transformers or peft before."""
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    tiny_tokenizer.save_pretrained(adapter)
    for name, content in damage.items():
        (adapter / name).unlink() if content is None else (adapter / name).write_bytes(content)
    with pytest.raises(MergeError, match=f"the adapter in {adapter} is damaged or incomplete \\({why}") as err:
        merge_adapter(str(tiny_model_dir), adapter, tmp_path / "merged", ModelConfig(), LAB_TEMPLATE, [], max_new_tokens=4)
    assert "copy the run's adapter/ again" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "merged").exists()
