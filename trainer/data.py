"""Text-to-SQL data: load (JSONL, gs:// JSONL, every *.jsonl under a gs:// prefix, HF dataset), validate, split, tokenize, pack.

Rows have the sql-create-context fields `question`, `context`, `answer`. The loss covers
the answer tokens only; batches are packed so no compute goes to padding, and packed
examples never attend to each other (position ids restart per example, which
transformers turns into a block-diagonal causal mask).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from common import layout
from common.errors import KitError
from common.prompts import render_prompt

FIELDS = ("question", "context", "answer")
IGNORE = -100
MAX_FIELD_CHARS = 20_000  # a row larger than this is surely not a text-to-SQL example
# A gs:// prefix (new data arriving as many files) is read whole into memory: more than this is a wrong prefix, not data.
MAX_PREFIX_OBJECTS = 1_000
MAX_PREFIX_BYTES = 1 << 30  # 1 GiB of JSONL, about a million rows of sql-create-context size


class DataError(KitError, ValueError):
    """Bad or missing data; the message names the file, line and field."""


@dataclass(frozen=True)
class Example:
    question: str
    context: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        return {"question": self.question, "context": self.context, "answer": self.answer}


def validate_row(row: object, where: str) -> Example:
    """Check one row has the three string fields; `where` names it in errors."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with fields {', '.join(FIELDS)}, got {type(row).__name__}")
    for field in FIELDS:
        if field not in row:
            raise DataError(f"{where}: missing field {field!r} (each row needs {', '.join(FIELDS)})")
        value = row[field]
        if not isinstance(value, str):
            raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field {field!r} is empty")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800" escape decodes to a string no tokenizer (or file) takes
            raise DataError(f"{where}: field {field!r} is not text: it holds {value[e.start:e.end]!r}, half of a surrogate pair; "
                            "fix or drop the row") from None
        if len(value) > MAX_FIELD_CHARS:
            raise DataError(f"{where}: field {field!r} is {len(value)} characters (limit {MAX_FIELD_CHARS})")
    return Example(row["question"], row["context"], row["answer"])


def read_jsonl(path: str | Path, name: str | None = None) -> list[Example]:
    """Read and validate a local JSONL file; blank lines are skipped. Errors name it as `name` (a gs:// copy: its URI)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {name or path}")
    where = name or path
    examples = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                detail = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                raise DataError(f"{where}:{lineno}: not valid JSON ({detail})") from None
            examples.append(validate_row(row, f"{where}:{lineno}"))
    if not examples:
        raise DataError(f"{where}: the dataset is empty (no rows)")
    return examples


def load_examples(source: str, split: str = "train", cache_dir: str | Path | None = None) -> list[Example]:
    """Load rows from a local JSONL path, a gs:// JSONL object, every *.jsonl object under a gs:// prefix (ending in /),
    or a Hugging Face dataset id."""
    if source.startswith("gs://"):
        from common import storage

        cache = Path(cache_dir or layout.scratch("data"))
        if source.endswith("/"):
            return _load_gcs_prefix(source, cache)
        return read_jsonl(storage.download_file(source, cache), source)
    path = Path(source)
    if path.suffix in (".jsonl", ".json") or path.exists():
        return read_jsonl(path)
    return _load_hf_dataset(source, split)


def _load_gcs_prefix(prefix: str, cache: Path) -> list[Example]:
    """Every *.jsonl object under `prefix` (sub-folders too), in name order, each validated and named in its errors;
    refused before any download above MAX_PREFIX_OBJECTS objects or MAX_PREFIX_BYTES."""
    from common import storage

    listed = storage.list_sizes(prefix)
    names = sorted(n for n in listed if n.endswith(".jsonl"))
    if not names:
        others = ", ".join(sorted(listed)[:5]) or "nothing"
        raise DataError(f"no *.jsonl objects under {prefix} (found {others})")
    total = sum(listed[n] for n in names)
    if len(names) > MAX_PREFIX_OBJECTS or total > MAX_PREFIX_BYTES:
        raise DataError(f"{prefix} holds {len(names)} *.jsonl objects, {total / 2**20:.1f} MiB: more than the loader reads from one "
                        f"prefix ({MAX_PREFIX_OBJECTS} objects, {MAX_PREFIX_BYTES / 2**20:.0f} MiB); point data.source at a "
                        "narrower prefix")
    base = prefix.rstrip("/") + "/"
    examples = []
    for name in names:
        examples += read_jsonl(storage.download_file(base + name, cache), base + name)
    return examples


def _load_hf_dataset(dataset_id: str, split: str) -> list[Example]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, bad split: all end the same way for the user
        raise DataError(
            f"could not load Hugging Face dataset {dataset_id!r} (split {split!r}): {e}. "
            "Offline? Point data.source at a local or gs:// JSONL file instead."
        ) from None
    examples = [validate_row(row, f"{dataset_id}[{split}] row {i}") for i, row in enumerate(ds)]
    if not examples:
        raise DataError(f"{dataset_id}[{split}]: the dataset is empty")
    return examples


def split_examples(examples: Sequence[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic split; any training row whose answer is also a held-out answer is dropped."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * eval_fraction))
    if n_eval >= len(examples):
        raise DataError(f"only {len(examples)} rows: too few to hold out {eval_fraction:.0%} for evaluation and train on the rest")
    held = [examples[i] for i in order[:n_eval]]
    held_answers = {e.answer.strip() for e in held}
    train = [examples[i] for i in order[n_eval:] if examples[i].answer.strip() not in held_answers]
    if not train:
        raise DataError("no training rows left after removing answers that also appear in the held-out split")
    return train, held


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def tokenize_example(tokenizer, template: str, ex: Example) -> Tokenized:
    """Prompt tokens (masked from the loss) followed by answer tokens and EOS."""
    prompt_ids = tokenizer(render_prompt(template, ex.question, ex.context)).input_ids
    answer_ids = tokenizer(ex.answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return Tokenized(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def tokenize_examples(tokenizer, template: str, examples: Iterable[Example], max_length: int) -> tuple[list[Tokenized], int]:
    """Tokenize; examples longer than max_length are dropped (a truncated answer teaches wrong SQL)."""
    kept, dropped, longest = [], 0, 0
    for ex in examples:
        tok = tokenize_example(tokenizer, template, ex)
        longest = max(longest, len(tok.input_ids))
        if len(tok.input_ids) > max_length:
            dropped += 1
        else:
            kept.append(tok)
    if not kept:
        raise DataError(
            f"every example is longer than training.max_length={max_length} tokens "
            f"(the longest is {longest}); raise training.max_length"
        )
    return kept, dropped


def pack_rows(items: Sequence[Tokenized], max_length: int) -> list[list[Tokenized]]:
    """First-fit decreasing: group examples into rows of at most max_length tokens."""
    rows: list[list[Tokenized]] = []
    space: list[int] = []
    for item in sorted(items, key=lambda t: len(t.input_ids), reverse=True):
        n = len(item.input_ids)
        for i, free in enumerate(space):
            if n <= free:
                rows[i].append(item)
                space[i] -= n
                break
        else:
            rows.append([item])
            space.append(max_length - n)
    return rows


def collate(items: Sequence[Tokenized], max_length: int, pad_id: int, packing: bool = True) -> dict[str, torch.Tensor]:
    """One micro-batch as tensors.

    packing=True: rows of several examples, position ids restarting at each example and no
    attention mask, so transformers builds a block-diagonal causal mask. The few pad tokens
    at a row's end form their own "example" and carry no loss.
    packing=False: one example per row, right-padded, with an attention mask.
    """
    rows = pack_rows(items, max_length) if packing else [[t] for t in items]
    width = max(sum(len(t.input_ids) for t in row) for row in rows)
    input_ids, labels, positions, mask = [], [], [], []
    for row in rows:
        ids, lab, pos = [], [], []
        for t in row:
            ids += t.input_ids
            lab += t.labels
            pos += list(range(len(t.input_ids)))
        pad = width - len(ids)
        mask.append([1] * len(ids) + [0] * pad)
        input_ids.append(ids + [pad_id] * pad)
        labels.append(lab + [IGNORE] * pad)
        positions.append(pos + list(range(pad)))
    batch = {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.tensor(positions),
    }
    if not packing:
        batch["attention_mask"] = torch.tensor(mask)
    return batch


def step_batches(n_items: int, batch_size: int, accumulation: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Indices for one epoch: a list of optimizer steps, each a list of micro-batches."""
    order = list(range(n_items))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    per_step = batch_size * accumulation
    steps = []
    for start in range(0, n_items - per_step + 1, per_step):  # drop the ragged tail: equal-sized steps
        chunk = order[start : start + per_step]
        steps.append([chunk[i : i + batch_size] for i in range(0, per_step, batch_size)])
    if not steps:  # fewer rows than one step: one smaller step
        steps.append([order[i : i + batch_size] for i in range(0, n_items, batch_size)])
    return steps
