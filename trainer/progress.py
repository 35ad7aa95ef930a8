"""Training progress: a live bar on a terminal, periodic log lines elsewhere (Vertex logs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class StepProgress:
    """Shows step, loss, tokens/s and ETA."""

    def __init__(self, total: int, start: int, enabled: bool = True, log: Callable[[str], None] = print) -> None:
        self.total, self.start, self.enabled, self.log = total, start, enabled, log
        self.live = enabled and sys.stderr.isatty()
        self.every = max(1, total // 20)
        self._t0 = time.monotonic()
        self._bar = None

    def __enter__(self) -> StepProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, loss: float, tokens_per_s: float, eval_loss: float | None) -> None:
        if not self.enabled:
            return
        info = f"loss {loss:.3f}  {tokens_per_s:,.0f} tok/s" + (f"  eval {eval_loss:.3f}" if eval_loss is not None else "")
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif step % self.every == 0 or step == self.total:
            done = step - self.start
            eta = (time.monotonic() - self._t0) / max(done, 1) * (self.total - step)
            self.log(f"  step {step}/{self.total}  {info}  eta {eta:.0f}s")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
