"""A run's resource timeline: process memory and CPU, and each GPU's utilisation and memory, sampled in the background.

    with ResourceSampler() as sampler:      # a daemon thread takes a sample every interval_s
        sampler.stage = "train"             # each sample says which stage it fell in
        ...
    report["resources"] = sampler.timeline()

The timeline is bounded: when a sample would make it longer than `max_samples`, every other sample is dropped and the
interval doubles, so a run of any length keeps an evenly spaced timeline of the whole run in a few hundred samples. GPUs are read through
NVML (`nvidia-ml-py`, the `gpu` extra), as nvidia-smi reads them; without it, or without a GPU, samples have no
GPU lines (an empty `gpus` list) and nothing fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Literal

import psutil

MIB = 2**20
DEFAULT_INTERVAL_S = 2.0
DEFAULT_MAX_SAMPLES = 512  # about 17 minutes at 2 s before the first halving; a day-long run still has ~500 points

_log = logging.getLogger(__name__)


class NvmlGpus:
    """Every GPU NVML sees on this machine: utilisation (%) and memory in use (MiB) by all processes, as nvidia-smi shows."""

    def __init__(self, nvml: ModuleType) -> None:
        self._nvml = nvml
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    @classmethod
    def open(cls, nvml: ModuleType | None = None) -> NvmlGpus | None:
        """NVML if it is installed and a driver answers; None otherwise (a CPU machine: no GPU lines, no error)."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return None
        try:
            nvml.nvmlInit()
            gpus = cls(nvml)
        except nvml.NVMLError:  # no driver, no device, no permission: the same as no GPU
            return None
        if not gpus._handles:
            gpus.close()
            return None
        return gpus

    def read(self) -> list[dict]:
        out = []
        for index, handle in enumerate(self._handles):
            util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"index": index, "util_pct": float(util.gpu), "mem_mib": round(mem.used / MIB, 1)})
        return out

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class ResourceSampler:
    """Samples this process's RSS and CPU, and the GPUs, every `interval_s` on a daemon thread; `stop()` joins it.

    `gpus`: "auto" reads NVML when it is there; None samples no GPU; tests pass their own. `on_sample` sees each
    sample as it is taken (the run's TensorBoard events)."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, max_samples: int = DEFAULT_MAX_SAMPLES,
                 gpus: NvmlGpus | None | Literal["auto"] = "auto", on_sample: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be above 0, got {interval_s!r}")
        if max_samples < 2:  # halving needs at least two samples to keep one
            raise ValueError(f"max_samples must be 2 or more, got {max_samples!r}")
        self.interval_s, self.max_samples = float(interval_s), max_samples
        self.stage = "start"
        self.samples: list[dict] = []
        self._gpus_arg, self._gpus = gpus, None
        self._on_sample, self._clock = on_sample, clock
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._t0 = 0.0
        self._lock = threading.Lock()  # sample() from the thread and from stop() never interleave

    def start(self) -> ResourceSampler:
        self._gpus = NvmlGpus.open() if self._gpus_arg == "auto" else self._gpus_arg
        self._process.cpu_percent(None)  # psutil's first reading is a meaningless 0.0: it starts the measuring window
        self._t0 = self._clock()
        self.sample()
        self._thread.start()
        return self

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as e:  # a failing probe must not take the run down: the timeline just ends here
                _log.warning("resource sampling stopped: %s: %s", type(e).__name__, e)
                return

    def sample(self) -> dict:
        """Take one sample now (the thread calls this every interval)."""
        with self._lock:
            s = {"t": round(self._clock() - self._t0, 3), "stage": self.stage,
                 "rss_mib": round(self._process.memory_info().rss / MIB, 1),
                 "cpu_pct": round(self._process.cpu_percent(None), 1),  # of one core, as top shows: 4 busy threads read 400
                 "gpus": self._read_gpus()}
            self.samples.append(s)
            if len(self.samples) > self.max_samples:
                # Keep every other sample, the newest among them, and sample half as often: the timeline stays evenly
                # spaced (the next sample is twice the old interval after the newest kept) and still covers the whole run.
                self.samples = self.samples[(len(self.samples) - 1) % 2 :: 2]
                self.interval_s *= 2
        if self._on_sample is not None:
            self._on_sample(s)
        return s

    def _read_gpus(self) -> list[dict]:
        if self._gpus is None:
            return []
        try:
            return self._gpus.read()
        except Exception as e:  # a GPU fallen off the bus, a driver reset: the timeline goes on without GPU lines
            _log.warning("GPU sampling stopped: %s: %s", type(e).__name__, e)
            self._gpus = None
            return []

    def stop(self) -> dict:
        """Stop sampling (joins the thread; safe to call twice) and return the timeline."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._gpus is not None:
            self._gpus.close()
            self._gpus = None
        return self.timeline()

    def timeline(self) -> dict:
        """report.json's `resources`: the interval between the samples kept, and the samples."""
        with self._lock:
            return {"interval_s": self.interval_s, "samples": list(self.samples)}


def peaks(timeline: dict) -> dict:
    """The highest RSS, CPU and, per GPU, utilisation and memory over a timeline (for report.md and comparisons)."""
    samples = timeline.get("samples") or []
    out: dict = {"rss_mib": max((s["rss_mib"] for s in samples), default=None),
                 "cpu_pct": max((s["cpu_pct"] for s in samples), default=None), "gpus": {}}
    for s in samples:
        for g in s.get("gpus") or []:
            p = out["gpus"].setdefault(g["index"], {"util_pct": 0.0, "mem_mib": 0.0})
            p["util_pct"], p["mem_mib"] = max(p["util_pct"], g["util_pct"]), max(p["mem_mib"], g["mem_mib"])
    return out


def mean_gpu_utilisation(timeline: dict, stage: str) -> float | None:
    """The GPUs' mean utilisation (%) over the samples taken in `stage`, all GPUs together; None without GPU samples."""
    values = [g["util_pct"] for s in timeline.get("samples") or [] if s["stage"] == stage for g in s.get("gpus") or []]
    return round(sum(values) / len(values), 1) if values else None


def peaks_line(timeline: dict) -> str | None:
    """report.md's line: the peaks over the run, and how often they were sampled."""
    if not timeline.get("samples"):
        return None
    p = peaks(timeline)
    line = (f"- resources (peaks over {len(timeline['samples'])} samples, every {timeline['interval_s']:g} s): "
            f"RSS {p['rss_mib']:,.0f} MiB, CPU {p['cpu_pct']:.0f}% (of one core)")
    for index, g in sorted(p["gpus"].items()):
        line += f"; GPU {index} {g['util_pct']:.0f}% utilisation, {g['mem_mib']:,.0f} MiB"
    return line


def draw_timeline(ax, timeline: dict) -> None:
    """report.png's timeline panel on a matplotlib Axes: memory on the left axis, utilisation on the right, stages marked."""
    samples = timeline.get("samples") or []
    ax.set(xlabel="seconds since the run started", ylabel="memory (MiB)", title="Resources")
    if not samples:
        return
    t = [s["t"] for s in samples]
    ax.plot(t, [s["rss_mib"] for s in samples], color="#2a7ab0", label="RSS")
    pct = ax.twinx()
    pct.plot(t, [s["cpu_pct"] for s in samples], color="#999999", linewidth=0.8, label="CPU %")
    for index in sorted({g["index"] for s in samples for g in s["gpus"]}):
        gpu = [(s["t"], g) for s in samples for g in s["gpus"] if g["index"] == index]
        ax.plot([x for x, _ in gpu], [g["mem_mib"] for _, g in gpu], "--", label=f"GPU {index} memory")
        pct.plot([x for x, _ in gpu], [g["util_pct"] for _, g in gpu], ":", label=f"GPU {index} util %")
    pct.set(ylabel="utilisation (%)", ylim=(0, max(100.0, *(s["cpu_pct"] for s in samples)) * 1.05))
    for i, s in enumerate(samples):  # a line where each stage starts, named if it lasted more than one sample (else labels overlap)
        if i == 0 or s["stage"] != samples[i - 1]["stage"]:
            ax.axvline(s["t"], color="#dddddd", linewidth=0.8)
            if i + 1 < len(samples) and samples[i + 1]["stage"] == s["stage"]:
                ax.annotate(s["stage"], (s["t"], 1), xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="top", ha="right")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = pct.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, fontsize=7, loc="lower right")
