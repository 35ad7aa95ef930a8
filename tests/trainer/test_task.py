"""`python -m trainer.task`, the job's entry point: the HF token from Secret Manager, held to its contract."""

from __future__ import annotations

from trainer.task import SECRET_MANAGER_ENDPOINT, load_hf_token

SECRET = "projects/acme-ml/secrets/llmops-dev-hf-token"


def _env(secret_manager, **extra) -> dict:
    return {"HF_TOKEN_SECRET": f"{SECRET}/versions/latest", SECRET_MANAGER_ENDPOINT: secret_manager.url, **extra}


def test_token_is_read_from_the_secrets_latest_version(secret_manager):
    secret_manager.add_secret(SECRET)
    secret_manager.add_version(SECRET, "hf_old")
    secret_manager.add_version(SECRET, "hf_new\n")
    env = _env(secret_manager)
    assert load_hf_token(env, log=lambda m: None) is True
    assert env["HF_TOKEN"] == "hf_new"
    assert secret_manager.targets("versions.access") == [f"{SECRET}/versions/latest"] and secret_manager.refused() == []


def test_a_secret_without_a_version_means_no_token_not_a_failed_job(secret_manager):
    """Infra always creates the secret; it has a version only when `hfToken` is set. The README calls the token optional."""
    secret_manager.add_secret(SECRET)
    env, logs = _env(secret_manager), []
    assert load_hf_token(env, log=logs.append) is False
    assert "HF_TOKEN" not in env
    assert "has no version" in logs[0] and "pulumi config set --secret llmops-kit:hfToken" in logs[0]


def test_no_secret_named_or_a_token_already_set_reads_nothing(secret_manager):
    assert load_hf_token({}, log=print) is False
    assert load_hf_token(_env(secret_manager, HF_TOKEN="hf_local"), log=print) is True
    assert secret_manager.requests == []
