"""Vertex AI CustomJob entry point (the Vertex convention): `python -m trainer.task [--config F] [--set k=v ...]`.

Only parses arguments, sets up processes and secrets, and calls the pipeline. AIP_MODEL_DIR /
AIP_CHECKPOINT_DIR, when Vertex sets them, take the place of the local run and checkpoint dirs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from trainer.config import ConfigError, load_config
from trainer.distributed import gpus_per_replica, torchrun_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trainer.task", description=__doc__)
    p.add_argument("--config", help="run config YAML (local path inside the job)")
    p.add_argument("--config-json", help="the whole run config as JSON (what the Vertex launcher passes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    p.add_argument("--force", action="store_true", help="tune even if the base model meets the target")
    return p.parse_args(argv)


def load_hf_token(env: dict = os.environ) -> None:
    """HF_TOKEN from Secret Manager when the launcher passed the secret's name (the value never travels in args)."""
    name = env.get("HF_TOKEN_SECRET")
    if not name or env.get("HF_TOKEN"):
        return
    import base64

    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    resp = AuthorizedSession(creds).get(f"https://secretmanager.googleapis.com/v1/{name}:access", timeout=30)
    resp.raise_for_status()
    env["HF_TOKEN"] = base64.b64decode(resp.json()["payload"]["data"]).decode().strip()


def main(argv: list[str] | None = None) -> int:
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
    load_hf_token()
    from trainer.pipeline import run_pipeline

    report = run_pipeline(cfg, force=args.force)
    return 0 if report["status"] in ("succeeded", "skipped", "worker") else 1


if __name__ == "__main__":
    sys.exit(main())
