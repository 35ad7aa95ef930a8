"""A run's TensorBoard events: scalars written under the run folder, mirrored to Vertex's TensorBoard log folder.

    runs/<run-id>/tensorboard/events.out.tfevents.*      `make tensorboard` (tensorboard --logdir runs) shows every local run
    $AIP_TENSORBOARD_LOG_DIR (gs://)                     on a CustomJob with `tensorboard` set: Vertex uploads it to the instance

Written with tensorboardX rather than torch.utils.tensorboard: the same event files, but it needs only protobuf and
numpy (already in the image), where torch's writer imports the whole `tensorboard` package (its web server, a
native data server, absl, markdown, werkzeug) into the trainer image. The `tensorboard` package itself is a client
tool here (`make tensorboard`, and its reader in the tests).

Events go to a local folder always; a gs:// log folder gets a copy every `sync_every_s` and at close, through
common/storage (one gs:// path, the emulator honoured). The copy is best effort: TensorBoard is not the run's
result, so a failed upload is said, not raised.

Tags (one source for the trainer, the pipeline and the tests):
    loss/train  loss/held_out  train/learning_rate  train/tokens_per_s  memory/rss_mib  memory/gpu_allocated_mib   (step: optimizer step)
    accuracy/base_execution  accuracy/base_exact_match  accuracy/tuned_execution  accuracy/tuned_exact_match  (0 and the last step)
    resources/rss_mib  resources/cpu_pct  resources/gpu<i>_util_pct  resources/gpu<i>_mem_mib   (step: seconds since the run started)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from common import storage

LOSS_TRAIN, LOSS_HELD_OUT = "loss/train", "loss/held_out"
LEARNING_RATE, TOKENS_PER_S = "train/learning_rate", "train/tokens_per_s"
RSS_MIB, GPU_ALLOCATED_MIB = "memory/rss_mib", "memory/gpu_allocated_mib"
ACCURACY = "accuracy/{which}_{metric}"  # which: base|tuned; metric: execution|exact_match


def resource_tags(sample: dict) -> dict[str, float]:
    """One resource sample (trainer/resources.py) as TensorBoard scalars."""
    values = {"resources/rss_mib": sample["rss_mib"], "resources/cpu_pct": sample["cpu_pct"]}
    for g in sample["gpus"]:
        values |= {f"resources/gpu{g['index']}_util_pct": g["util_pct"], f"resources/gpu{g['index']}_mem_mib": g["mem_mib"]}
    return values


SYNC_EVERY_S = 60.0  # how stale Vertex's TensorBoard may be while a run goes; each copy is a few small objects
FLUSH_SECS = 10  # how stale a local `make tensorboard` may be


class EventLog:
    """Scalars for one run. Safe to call from the training loop and the resource sampler's thread at once."""

    def __init__(self, local_dir: Path, remote_dir: str | None = None, sync_every_s: float = SYNC_EVERY_S,
                 log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        from tensorboardX import SummaryWriter

        if remote_dir is not None:
            storage.split_uri(remote_dir)  # a malformed log folder fails here, naming it, not at the first copy
        self.local_dir, self.remote_dir = Path(local_dir), remote_dir
        self._writer = SummaryWriter(logdir=str(self.local_dir), flush_secs=FLUSH_SECS)
        self._sync_every_s, self._log, self._clock = sync_every_s, log, clock
        self._last_sync = clock()
        self._lock = threading.Lock()  # writes and close: a write after close would open a new events file
        self._copy_lock = threading.Lock()  # one copy to the remote folder at a time
        self._closed = False

    def scalars(self, step: int, values: Mapping[str, float | None], may_sync: bool = True) -> None:
        """Record each value under its tag at `step`; a None or non-finite value (not measured here) is left out.
        `may_sync=False` (the training loop): never pay for the copy to the remote folder here; the sampler's thread
        and close() make it."""
        with self._lock:
            if self._closed:
                return
            for tag, value in values.items():
                if value is not None and math.isfinite(value):
                    self._writer.add_scalar(tag, float(value), int(step))
            due = may_sync and self.remote_dir is not None and self._clock() - self._last_sync >= self._sync_every_s
        if due:
            self.sync()

    def sync(self) -> None:
        """Write out what is buffered and copy the folder to the remote log folder (if any)."""
        if not self._copy_lock.acquire(blocking=False):
            return  # another thread is copying it now
        try:
            with self._lock:
                if not self._closed:
                    self._writer.flush()
                self._last_sync = self._clock()
            self._copy()
        finally:
            self._copy_lock.release()

    def close(self) -> None:
        """Flush, close and make the last copy; later scalars are ignored (the run is over). Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        with self._copy_lock:  # after any copy under way on another thread
            self._copy()

    def _copy(self) -> None:
        if not self.remote_dir:
            return
        try:
            storage.upload_dir(self.local_dir, self.remote_dir)
        except storage.StorageError as e:
            self._log(f"warning: TensorBoard events not copied to {self.remote_dir}: {e}")
