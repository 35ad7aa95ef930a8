"""Vertex AI CustomJob entry point (the Vertex convention): `python -m trainer.task [--config F] [--set k=v ...]`.

Only parses arguments, sets up processes and secrets, and calls the pipeline. AIP_MODEL_DIR /
AIP_CHECKPOINT_DIR, when Vertex sets them, take the place of the local run and checkpoint dirs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from common.errors import KitError
from trainer.config import ConfigError, load_config
from trainer.distributed import gpus_per_replica, torchrun_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trainer.task", description=__doc__)
    p.add_argument("--config", help="run config YAML (local path inside the job)")
    p.add_argument("--config-json", help="the whole run config as JSON (what the Vertex launcher passes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    p.add_argument("--force", action="store_true", help="tune even if the base model meets the target")
    return p.parse_args(argv)


SECRET_MANAGER_ENDPOINT = "LLMOPS_SECRET_MANAGER_ENDPOINT"  # another Secret Manager endpoint (a local stand-in in tests)


class SecretError(KitError, RuntimeError):
    """The HF token secret exists but cannot be read."""


def load_hf_token(env=os.environ, log=print) -> bool:
    """HF_TOKEN from Secret Manager when the launcher passed the secret's version name (the value never travels in args).

    A secret with no version yet means no token: public models still load, and a gated one fails with the Hub's
    own message. Returns whether a token was set.
    """
    name = env.get("HF_TOKEN_SECRET")
    if not name or env.get("HF_TOKEN"):
        return bool(env.get("HF_TOKEN"))
    from google.api_core import exceptions
    from google.cloud import secretmanager

    endpoint = env.get(SECRET_MANAGER_ENDPOINT)
    kwargs = {}
    if endpoint:
        kwargs["client_options"] = {"api_endpoint": endpoint}
        if endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs |= {"transport": "rest", "credentials": AnonymousCredentials()}
    try:
        response = secretmanager.SecretManagerServiceClient(**kwargs).access_secret_version(name=name, timeout=30)
    except exceptions.NotFound:
        log(f"no Hugging Face token: {name.rsplit('/versions/', 1)[0]} has no version (add one with "
            "`pulumi config set --secret llmops-kit:hfToken hf_...` and `pulumi up`); public models only")
        return False
    except exceptions.PermissionDenied as e:
        raise SecretError(f"cannot read the Hugging Face token {name}: {e.message} (the job's service account needs "
                          "roles/secretmanager.secretAccessor on it; infra grants it to the trainer account)") from None
    env["HF_TOKEN"] = response.payload.data.decode().strip()
    log(f"Hugging Face token read from {response.name}")  # the version's name, never the value
    return True


def main(argv: list[str] | None = None) -> int:
    from common.quiet import quiet

    quiet()  # the job's log holds the kit's lines; LLMOPS_VERBOSE=1 in the job's env keeps the libraries' too
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, inline=args.config_json)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    relaunch = torchrun_command(os.environ, argv, gpus_per_replica(os.environ))
    if relaunch:
        return subprocess.call(relaunch)
    try:
        load_hf_token()
    except SecretError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from trainer.distributed import setup_accelerator
    from trainer.pipeline import run_pipeline
    from trainer.plan import Placement, plan_run

    # SIGTERM (Vertex preempting or cancelling the job, torchrun stopping the ranks when another failed) becomes an
    # exception, so the run's report says it failed and why instead of staying "running".
    signal.signal(signal.SIGTERM, _terminated)
    where = Placement.from_env()  # the edge: everything about where this process runs, read once
    try:
        accelerator = setup_accelerator()
        plan = plan_run(cfg, where, force=args.force)
        report = run_pipeline(plan, accelerator=accelerator)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:
        if where.world_size > 1:  # one line that names the rank, before the traceback torchrun collects
            print(f"error: rank {where.rank} of {where.world_size} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise
    return 0 if report["status"] in ("succeeded", "skipped", "worker") else 1


class Terminated(SystemExit):
    def __str__(self) -> str:
        return "terminated by SIGTERM (preempted, cancelled, or another rank failed)"


def _terminated(signum, frame) -> None:
    raise Terminated(143)


if __name__ == "__main__":
    sys.exit(main())
