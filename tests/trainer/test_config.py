import pytest

from common.prompts import LAB_TEMPLATE
from trainer.config import ConfigError, load_config


def test_defaults_are_the_labs_recipe():
    cfg = load_config()
    assert cfg.lora.r == 16 and cfg.lora.alpha == 16 and cfg.lora.dropout == 0.05
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.data.prompt_template == LAB_TEMPLATE
    assert cfg.model.trust_remote_code is False


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["training.max_steps=20", "lora.target_modules=all-linear", "model.trust_remote_code=true",
                             "lora.modules_to_save=[lm_head]"])
    assert cfg.training.max_steps == 20
    assert cfg.lora.target_modules == "all-linear"
    assert cfg.model.trust_remote_code is True
    assert cfg.lora.modules_to_save == ["lm_head"]


def test_unknown_key_names_its_path(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("training:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=r"training\.max_stepz: unknown key") as e:
        load_config(f)
    assert str(f) in str(e.value)


def test_bad_value_names_its_key():
    with pytest.raises(ConfigError, match=r"training\.learning_rate"):
        load_config(None, ["training.learning_rate=-1"])
    with pytest.raises(ConfigError, match=r"model\.quantization"):
        load_config(None, ["model.quantization=3bit"])


def test_template_must_end_with_answer():
    with pytest.raises(ConfigError, match=r"data\.prompt_template"):
        load_config(None, ["data.prompt_template='{answer} {question} {context}'"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["training.max_steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
