"""Vertex AI CustomJob entry point (the Vertex convention): `python -m trainer.task [--config F] [--set k=v ...]`.

Only parses arguments and calls the pipeline; AIP_MODEL_DIR / AIP_CHECKPOINT_DIR, when
Vertex sets them, take the place of the local run and checkpoint dirs.
"""

from __future__ import annotations

import argparse
import sys

from trainer.config import ConfigError, load_config


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trainer.task", description=__doc__)
    p.add_argument("--config", help="run config YAML (local path inside the job)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    p.add_argument("--force", action="store_true", help="tune even if the base model meets the target")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from trainer.pipeline import run_pipeline

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = run_pipeline(cfg, force=args.force)
    return 0 if report["status"] in ("succeeded", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
