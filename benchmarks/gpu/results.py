"""The run's result file: rows and sections, with the workload, projection and targets recomputed on every write."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu.projection import LAB_EVAL_ROWS, LAB_EXAMPLES, SCALES, SPECS, TWO_GPU_SCALING, project, targets, workload_seconds
from common.atomic import atomic_write_text


class ResultsError(ValueError):
    """--out names a file this benchmark did not write: it is not overwritten."""


class Results:
    """The run's JSON at `path`, rewritten (atomically) after every measurement; a later process adds its sections."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        try:
            old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ResultsError(f"{path} is there and is not a result file of this benchmark ({e}); move it or pick another --out") from None
        if not isinstance(old, dict) or not isinstance(old.get("rows", []), list) or not isinstance(old.get("sections", {}), dict):
            raise ResultsError(f"{path} is JSON but not a result file of this benchmark; move it or pick another --out")
        same = all(old.get(k) == v for k, v in header.items())
        self.data = (old if same else {}) | header
        self.data.setdefault("rows", [])
        self.data.setdefault("sections", {})

    def add_row(self, row: dict) -> None:
        key = (row["setup"], row.get("l4_cap"))
        self.data["rows"] = [r for r in self.data["rows"] if (r["setup"], r.get("l4_cap")) != key] + [row]
        self.write()

    def set_section(self, name: str, value: dict) -> None:
        self.data["sections"][name] = value
        self.write()

    def write(self) -> None:
        kind, rows, sections = self.data["device"], self.data["rows"], self.data["sections"]
        capped = any(r.get("l4_cap") for r in rows)
        parts = workload_seconds(rows, sections, capped)
        projection = {arm: project(p, kind, arm) for arm, p in parts.items()}
        self.data |= {"workload_seconds_on_this_device": {a: {k: round(v, 1) for k, v in p.items()} for a, p in parts.items()},
                      "projection": projection, "targets": targets(rows, projection), "projection_model": {
                          "specs_tflops_gbps": SPECS, "two_l4_scaling": TWO_GPU_SCALING, "lab_examples": LAB_EXAMPLES,
                          "lab_eval_rows": LAB_EVAL_ROWS, "scales": SCALES,
                          "assumes": "training and loss evaluation are compute-bound at these batches (optimistic end: scale by "
                                     "dense fp16/bf16 peak) or bandwidth-bound (pessimistic end); decoding is bandwidth-bound; "
                                     "merge, save and checkpoints are disk-bound and not scaled; the lab's device_map='auto' "
                                     "over two L4s runs at one L4's speed, the kit's data parallelism at 1.9x"}}
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")
