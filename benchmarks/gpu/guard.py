"""One measurement at a time, guarded: a time limit, a deadline, errors recorded, and the L4 memory cap."""

from __future__ import annotations

import contextlib
import gc
import signal
import time

import torch

L4_USABLE_GIB = 22.0  # of an L4's 24 GB, after the CUDA context and allocator reserve


class _TimedOut(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expire(*_):
        raise _TimedOut(f"took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_CAP = {"fraction": None, "on": False}


def _set_cap(on: bool) -> None:
    """An L4's usable memory on a bigger GPU (on), or the whole GPU (off)."""
    if _CAP["fraction"] is None:
        return
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(_CAP["fraction"] if on else 1.0)
    _CAP["on"] = on


def l4_cap_fraction(total_bytes: int) -> float | None:
    """The memory fraction that leaves a process an L4's usable memory on a bigger GPU (None: the GPU is no bigger)."""
    fraction = L4_USABLE_GIB * 2**30 / total_bytes
    return fraction if fraction < 1 else None


def fresh_accelerate() -> None:
    """Forget the process-wide state accelerate keeps (one shared AcceleratorState): the lab's Trainer leaves fp16 mixed
    precision there on a GPU, and every later Accelerator() in the process would silently train under it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def guarded(name: str, fn, limit_s: int, device: str, deadline: float = 0.0) -> dict:
    """Run one measurement as if in a fresh process (no accelerate state, peak memory reset); an error, an
    out-of-memory or a time-out becomes the row's `error` and the next one runs. Past `deadline` (epoch seconds;
    0: none) it is skipped, and it may not run beyond it."""
    if deadline:
        left = int(deadline - time.time())
        if left < 5:
            return {"setup": name, "error": "skipped: out of time", "wall_seconds": 0.0}
        limit_s = min(limit_s, left)
    fresh_accelerate()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    try:
        with _time_limit(limit_s):
            row = fn()
    except torch.cuda.OutOfMemoryError:
        row = {"error": "out of memory" + (f" under an L4's {L4_USABLE_GIB:g} GiB" if _CAP["on"] else "")}
    except (_TimedOut, Exception) as e:
        row = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    row = {"setup": name, **row, "wall_seconds": round(time.monotonic() - t0, 1)}
    if device == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["fits_l4"] = "error" not in row and row["peak_memory_gib"] <= L4_USABLE_GIB
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row
