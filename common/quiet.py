"""The kit's own output only: third-party progress bars, info chatter and deprecation warnings off unless asked for.

Call `quiet()` before transformers, datasets or peft are imported (the libraries read these settings at import).
`LLMOPS_VERBOSE=1` (or `llmops -v`) keeps everything.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "LLMOPS_VERBOSE"
# Libraries whose warnings are about their own internals and upcoming API changes, not about the user's run.
CHATTY = ("transformers", "peft", "accelerate", "torch", "datasets", "huggingface_hub")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def quiet(keep: bool | None = None) -> None:
    if keep if keep is not None else verbose():
        os.environ[VERBOSE_ENV] = "1"  # child processes (torchrun workers) stay verbose too
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" and "Writing model shards" too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        for module in CHATTY:
            warnings.filterwarnings("ignore", category=category, module=rf"{module}(\..*)?$")
