"""Shared fixtures. Cloud stand-ins (GCS emulator, ...) live in tests/standins/ and are exposed here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach Google: no metadata-server probe for credentials (google-auth reads this at import).
os.environ.setdefault("NO_GCE_CHECK", "true")

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.standins.gcs", "tests.standins.vertex", "tests.standins.secretmanager", "tests.standins.cloudbuild",
                  "tests.standins.webhook", "tests.standins.project", "tests.standins.vertex_beta",
                  "tests.container.fixtures"]  # the real kit image: engine, local base, build (docs/images.md)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The embedded tokenizer recipe trained on a slice of the bundled sample (about a second)."""
    from common.prompts import LAB_TEMPLATE
    from trainer.embedded import sqlgen, tinybase

    rows = sqlgen.generate(300, seed=sqlgen.SAMPLE_SEED)
    return tinybase.build_tokenizer([LAB_TEMPLATE] + [f"{r['question']} {r['context']} {r['answer']}" for r in rows])


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A small random Llama (no training) for shape and masking tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=tiny_tokenizer.bos_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer) -> Path:
    """The small random Llama saved as a normal HF model dir (a stand-in base for fast pipeline tests)."""
    out = tmp_path_factory.mktemp("models") / "tiny-random-llama"
    tiny_model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out
