"""Text comes back in whole characters. A byte-level tokenizer spells a character outside its merges as one token per
byte (the tiny tokenizer: "€" is 3 tokens), and a model may stop, or go on to other text, in the middle of one.

The model here is the tiny Llama made a bigram machine (its one layer writes nothing, so the next token is a function
of the last one alone), wired to spell exactly those sequences, and served by `python -m serving` like any model."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.serving.conftest import HEALTH, PREDICT, Server

SELECT, CREATE = "SELECT", "CREATE"


@pytest.fixture(scope="module")
def bigram_dir(tiny_model, tiny_tokenizer, tmp_path_factory):
    import torch
    from transformers import LlamaForCausalLM

    ids = lambda s: tiny_tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
    (select,), (create,) = ids(SELECT), ids(CREATE)
    euro, e_acute, space_and = ids("€"), ids("é"), ids(" AND")
    assert len(euro) == 3 and len(e_acute) == 2, "split into bytes by the tokenizer"
    # SELECT -> € € € ...  (a 3-byte character, repeated) ; CREATE -> C3 " AND" C3 " AND" ... (a lead byte never completed)
    chains = [[select, *euro, euro[0]], [create, e_acute[0], *space_and, e_acute[0]]]
    nxt = {a: b for chain in chains for a, b in itertools.pairwise(chain)}

    config = tiny_model.config.to_dict() | {"num_hidden_layers": 1}
    model = LlamaForCausalLM(type(tiny_model.config)(**config)).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        emb = torch.nn.functional.normalize(torch.randn(model.config.vocab_size, model.config.hidden_size), dim=-1)
        model.model.embed_tokens.weight.copy_(emb)
        head = torch.zeros_like(model.lm_head.weight)
        for a, b in nxt.items():
            head[b] += 5.0 * emb[a]
        model.lm_head.weight.copy_(head)
    out = tmp_path_factory.mktemp("bigram") / "model"
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(bigram_dir, tmp_path_factory):
    s = Server({"MODEL_DIR": str(bigram_dir), "AIP_HEALTH_ROUTE": HEALTH, "AIP_PREDICT_ROUTE": PREDICT},
               tmp_path_factory.mktemp("srv") / "server.log")
    s.wait_healthy(HEALTH)
    yield s
    s.stop()


def _predict(server, prompt: str, **parameters) -> dict:
    r = httpx.post(server.url + PREDICT, json={"instances": [{"prompt": prompt}], "parameters": parameters}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


@pytest.mark.parametrize("max_tokens, text", [(3, "€"), (4, "€"), (5, "€"), (6, "€€")])
def test_generation_cut_in_a_character_returns_the_whole_characters_before_it(server, max_tokens, text):
    p = _predict(server, SELECT, max_tokens=max_tokens)
    assert p["completion_tokens"] == max_tokens and p["finish_reason"] == "length"
    assert p["text"] == text


def test_bytes_that_never_form_a_character_are_left_out(server):
    """The issue's `frequency_mhz < � AND`: a lead byte followed by other text."""
    p = _predict(server, CREATE, max_tokens=6)
    assert p["text"] == " AND AND"


def test_a_stop_string_spelled_in_several_byte_tokens_ends_generation(server):
    """Watched stop strings were looked for in text decoded one token at a time: "€" came out as three "�"."""
    p = _predict(server, SELECT, max_tokens=30, stop=["€"])
    assert (p["text"], p["finish_reason"], p["completion_tokens"]) == ("", "stop", 3)
    p = _predict(server, SELECT, max_tokens=30, stop=["€€"])
    assert (p["text"], p["finish_reason"], p["completion_tokens"]) == ("", "stop", 6)
