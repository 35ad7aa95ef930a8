"""What the distilled test-suite metric costs per row: build each held-out row's suite and check one prediction.

    python benchmarks/suite_bench.py          # the bundled sample's 200 held-out rows, one core

Writes benchmarks/results/suite.json. The target is 50 ms per row on one core (200 rows in the pipeline: 10 s).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.config import load_config  # noqa: E402
from trainer.data import load_examples, split_examples  # noqa: E402
from trainer.sqlmetric import Scorer, parse_schema  # noqa: E402
from trainer.sqlmetric.suites import distil  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    cfg = load_config("configs/default.yaml", [])
    rows = split_examples(load_examples(cfg.data.source), cfg.data.eval_fraction, cfg.data.seed)[1][: cfg.data.max_eval_examples]
    t0 = time.perf_counter()
    suites = [distil(r.answer, parse_schema(r.context), min_databases=cfg.eval.db_variants) for r in rows]
    build = (time.perf_counter() - t0) / len(rows)
    scorer = Scorer(cfg.eval.db_variants, cfg.eval.timeout_s)
    t0 = time.perf_counter()
    for r in rows:  # a prediction equal to the gold: the most work a check does (every database runs)
        scorer.score(r.answer, r.answer, r.context)
    check = (time.perf_counter() - t0) / len(rows)  # includes building the suite once more (a fresh scorer)
    t0 = time.perf_counter()
    for r in rows:  # what the pipeline checks before any model work (trainer/pipeline.py: _flag_unscorable)
        scorer.check(r.answer, r.context)
    flag = (time.perf_counter() - t0) / len(rows)
    out = {"rows": len(rows), "build_ms_per_row": round(1000 * build, 2), "build_and_check_ms_per_row": round(1000 * check, 2),
           "flag_ms_per_row": round(1000 * flag, 3),
           "neighbours_mean": round(sum(s.neighbours for s in suites) / len(suites), 2),
           "distinguished_fraction": round(sum(s.strength for s in suites) / len(suites), 4),
           "databases_mean": round(sum(len(s.databases) for s in suites) / len(suites), 2), "threads": 1, "target_ms_per_row": 50}
    path = Path("benchmarks/results/suite.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
