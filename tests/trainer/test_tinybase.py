"""The embedded base's structured initialisation: what makes a 2M-parameter model learn to copy in minutes."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.embedded import tinybase


def _model(tied: bool = True) -> LlamaForCausalLM:
    cfg = dict(tinybase.MODEL_CONFIG, tie_word_embeddings=tied)
    return LlamaForCausalLM(LlamaConfig(vocab_size=1000, **cfg))


def test_copy_heads_pass_the_attended_token_through_unchanged():
    model = _model()
    tinybase.init_copy_heads(model, first_layer=2, seed=3)
    for i, layer in enumerate(model.model.layers):
        ov = layer.self_attn.o_proj.weight @ layer.self_attn.v_proj.weight
        is_identity = torch.allclose(ov, torch.eye(ov.shape[0]), atol=1e-5)
        assert is_identity == (i >= 2), f"layer {i}"


def test_a_copied_embedding_predicts_its_own_token_through_the_tied_output_layer():
    model = _model()
    tinybase.init_copy_heads(model, seed=3)
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    logits = emb @ emb.T  # the output layer applied to each token's own embedding
    assert torch.equal(logits.argmax(dim=1), torch.arange(emb.shape[0]))


def test_initialisation_is_deterministic():
    a, b = _model(), _model()
    tinybase.init_copy_heads(a, seed=5)
    tinybase.init_copy_heads(b, seed=5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if "self_attn.v_proj" in name or "self_attn.o_proj" in name or "embed_tokens" in name:
            if name.startswith("model.layers.0.") or name.startswith("model.layers.1."):
                continue  # left to the ordinary (torch.manual_seed) init
            assert torch.equal(pa, pb), name


def test_grouped_query_attention_is_refused():
    cfg = dict(tinybase.MODEL_CONFIG, num_key_value_heads=2)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, **cfg))
    with pytest.raises(ValueError, match="value head per attention head"):
        tinybase.init_copy_heads(model)


def test_ranks_that_start_together_build_the_base_once_and_all_load_it(tmp_path):
    """torchrun's ranks in a fresh container resolve the embedded base at the same moment: none may load a folder
    another is still moving into place (a rank failed with "Unrecognized model ... model_type" before the lock)."""
    import os
    import subprocess
    import sys

    code = ("from trainer.embedded.tinybase import resolve_embedded, EMBEDDED_ID\n"
            "from transformers import AutoConfig\n"
            "print(AutoConfig.from_pretrained(resolve_embedded(EMBEDDED_ID, log=lambda m: print('BUILT'))).model_type)\n")
    env = {**os.environ, "LLMOPS_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in outs]
    assert all(out.strip().endswith("llama") for out, _ in outs)
    assert sum(out.count("BUILT") for out, _ in outs) == 1, "built once; the others waited for it"
