"""The base model: where it comes from (local dir, hub id, embedded), the errors that say what to fix, the compute dtype,
and LoRA attached so that only the adapters train and a fresh adapter leaves the base's outputs as they were."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from common.errors import KitError
from trainer.config import LoraConfig, ModelConfig, TrainingConfig
from trainer.modeling import ModelError, attach_lora, count_parameters, load_model, load_tokenizer, pick_dtype, resolve_model_dir

HIDDEN, INTERMEDIATE, LAYERS = 64, 128, 2  # tests/conftest.py's tiny_model


# --- resolve_model_dir --------------------------------------------------------------------------------------------------


def test_a_local_model_dir_is_returned(tiny_model_dir):
    assert resolve_model_dir(str(tiny_model_dir)) == str(tiny_model_dir)


def test_a_home_relative_dir_is_expanded(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_model_dir.parent))
    assert resolve_model_dir(f"~/{tiny_model_dir.name}") == str(tiny_model_dir)


def test_a_dir_without_config_json_is_not_a_model(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_dir(str(tmp_path))


@pytest.mark.parametrize("base", ["./models/nope", "../nope", "/no/such/model", "~/no-such-model-dir", "a/b/c"])
def test_a_missing_path_is_not_mistaken_for_a_hub_id(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="model path not found") as err:
        resolve_model_dir(base)
    assert base in str(err.value)
    assert isinstance(err.value, KitError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("base", ["gpt2", "codellama/CodeLlama-7b-hf", "meta-llama/Llama-2-7b-hf"])
def test_a_hub_id_is_returned_as_it_is(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert resolve_model_dir(base) == base


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(tiny_model_dir, tmp_path, monkeypatch):
    shutil.copytree(tiny_model_dir, tmp_path / "org" / "model")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("org/model") == "org/model"
    (tmp_path / "org" / "model" / "config.json").unlink()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_dir("org/model")


def test_an_unknown_embedded_id_is_a_model_error():
    with pytest.raises(KitError, match="embedded:tiny-sql-llama"):
        resolve_model_dir("embedded:tiny-sql-llama-v2")


def test_an_unknown_embedded_id_is_refused_naming_the_known_one():
    with pytest.raises(ValueError, match="the only one is 'embedded:tiny-sql-llama'"):
        resolve_model_dir("embedded:tiny-sql-llama-v2")


OFFLINE_PROBE = """
import sys
from trainer.config import ModelConfig
from trainer.modeling import ModelError, load_model, load_tokenizer, resolve_model_dir
base = "llmops-kit-tests/no-such-model"
assert resolve_model_dir(base) == base
for load in (lambda: load_tokenizer(base, ModelConfig(base=base)), lambda: load_model(base, ModelConfig(base=base), "fp32")):
    try:
        load()
    except ModelError as e:
        print(e)
    else:
        sys.exit("loaded")
"""


def test_an_uncached_hub_id_offline_says_the_hub_is_switched_off(tmp_path, repo_root):
    # HF_HUB_OFFLINE is read by huggingface_hub at import, so it is set where users set it: before the process starts.
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "PYTHONPATH": str(repo_root)}
    out = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    for line in lines:
        assert "'llmops-kit-tests/no-such-model'" in line and "HF_HUB_OFFLINE=1" in line and "embedded:tiny-sql-llama" in line


def test_damaged_weights_say_copy_the_model_again(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(ModelError, match="damaged or incomplete") as err:
        load_model(str(broken), ModelConfig(), precision="fp32")
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("config", ["[]", "null", "3", '"llama"'])
@pytest.mark.parametrize("load", [load_tokenizer, load_model])
def test_a_config_json_that_is_not_an_object_names_the_model_dir(tiny_model_dir, tmp_path, config, load):
    """A TypeError from transformers (`argument after ** must be a mapping`) before."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text(config)
    with pytest.raises(ModelError, match=f"could not load the model in {broken}"):
        load(str(broken), ModelConfig())


# --- load_tokenizer, pick_dtype, load_model ------------------------------------------------------------------------------


def test_the_tokenizer_pads_on_the_left(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir), ModelConfig())
    assert tok.padding_side == "left" and tok.pad_token_id is not None


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_an_explicit_precision_is_that_dtype(precision, dtype):
    assert pick_dtype(precision) is dtype


def test_auto_precision_follows_the_hardware():
    if not torch.cuda.is_available():
        assert pick_dtype("auto") is torch.float32
    else:
        assert pick_dtype("auto") is (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantization_without_a_gpu_says_how_to_train_without_it(tiny_model_dir, quantization):
    with pytest.raises(ModelError, match="model.quantization=none"):
        load_model(str(tiny_model_dir), ModelConfig(quantization=quantization), precision="bf16")


def test_load_model_uses_the_chosen_dtype(tiny_model_dir):
    model = load_model(str(tiny_model_dir), ModelConfig(), precision="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# --- count_parameters and attach_lora -------------------------------------------------------------------------------------


@pytest.fixture
def base(tiny_model_dir):
    """A fresh copy of the tiny model: attach_lora changes the model it wraps."""
    return load_model(str(tiny_model_dir), ModelConfig(), precision="fp32")


def test_count_parameters_of_a_plain_model(tiny_model):
    trainable, total = count_parameters(tiny_model)
    # embeddings + per layer (q, k, v, o, gate, up, down, two norms) + final norm + an untied lm_head
    vocab = tiny_model.config.vocab_size
    per_layer = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN
    assert total == vocab * HIDDEN + LAYERS * per_layer + HIDDEN + vocab * HIDDEN
    assert trainable == total


def test_count_parameters_sees_frozen_weights(base):
    base.model.embed_tokens.weight.requires_grad_(False)
    trainable, total = count_parameters(base)
    assert total - trainable == base.config.vocab_size * HIDDEN


@pytest.mark.parametrize(("targets", "per_layer"), [
    (["q_proj", "v_proj"], 2 * (HIDDEN + HIDDEN)),
    (["q_proj", "k_proj", "v_proj", "o_proj"], 4 * (HIDDEN + HIDDEN)),
    ("all-linear", 4 * (HIDDEN + HIDDEN) + 3 * (HIDDEN + INTERMEDIATE)),  # lm_head is not adapted
])
def test_only_the_adapters_train_and_their_size_is_r_times_in_plus_out(base, targets, per_layer):
    _, base_total = count_parameters(base)
    r = 4
    model = attach_lora(base, LoraConfig(r=r, target_modules=targets), TrainingConfig())
    trainable, total = count_parameters(model)
    assert trainable == LAYERS * r * per_layer
    assert total == base_total + trainable
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)


def test_a_fresh_adapter_leaves_the_outputs_unchanged(base):
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        before = base(input_ids=ids).logits.clone()
    model = attach_lora(base, LoraConfig(r=8, target_modules="all-linear"), TrainingConfig())
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before)


@pytest.mark.parametrize(("use_rslora", "scaling"), [(False, 32 / 16), (True, 32 / math.sqrt(16))])
def test_lora_settings_reach_the_adapters(base, use_rslora, scaling):
    lora = LoraConfig(r=16, alpha=32, dropout=0.25, target_modules=["q_proj"], use_rslora=use_rslora)
    model = attach_lora(base, lora, TrainingConfig())
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.r["default"] == 16
    assert q.scaling["default"] == pytest.approx(scaling)
    assert q.lora_dropout["default"].p == 0.25
    assert not hasattr(model.base_model.model.model.layers[0].self_attn.k_proj, "lora_A")


def test_modules_to_save_train_in_full(base):
    model = attach_lora(base, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]), TrainingConfig())
    trainable, _ = count_parameters(model)
    adapters = LAYERS * 2 * (HIDDEN + HIDDEN)
    assert trainable == adapters + base.config.vocab_size * HIDDEN


def test_gradient_checkpointing_is_switched_on_when_configured(base):
    model = attach_lora(base, LoraConfig(target_modules=["q_proj"]), TrainingConfig(gradient_checkpointing=True))
    assert model.base_model.model.is_gradient_checkpointing


@pytest.mark.parametrize("targets", [["nope_proj"], ["c_attn"]])
def test_target_modules_the_model_lacks_are_a_model_error(base, targets):
    with pytest.raises(ModelError, match="lora.target_modules=") as err:
        attach_lora(base, LoraConfig(target_modules=targets), TrainingConfig())
    assert repr(targets) in str(err.value)
