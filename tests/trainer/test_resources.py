"""The resource timeline: bounded, evenly spaced after halving, GPU lines from NVML or none, and a thread that stops."""

from __future__ import annotations

import sys
import threading
import time
from types import SimpleNamespace

import pytest

from trainer.resources import NvmlGpus, ResourceSampler, mean_gpu_utilisation, peaks, peaks_line


class FakeClock:
    """The sampler's clock, moved by hand: each sample() is taken one current interval after the last, as the thread does."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeNvml:
    """The slice of pynvml's API the sampler calls, with two GPUs."""

    class NVMLError(Exception):
        pass

    def __init__(self, util=(35, 90), used_mib=(1024, 30000), fail_init=False) -> None:
        self.util, self.used, self.fail_init, self.shutdowns = util, used_mib, fail_init, 0

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.util)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self.util[h], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used[h] * 2**20, total=80 * 2**30, free=0)


def _sampled(duration_s: float, max_samples: int, interval_s: float = 2.0) -> ResourceSampler:
    """A sampler that sampled a run of `duration_s` at its own (growing) interval, as its thread would, without the thread."""
    clock = FakeClock()
    sampler = ResourceSampler(interval_s=interval_s, max_samples=max_samples, gpus=None, clock=clock)
    sampler._t0 = clock.now
    while clock.now - sampler._t0 <= duration_s:
        sampler.sample()
        clock.now += sampler.interval_s
    return sampler


def test_a_long_run_keeps_a_bounded_evenly_spaced_timeline_of_the_whole_run():
    day = 24 * 3600
    timeline = _sampled(day, max_samples=16).timeline()
    samples = timeline["samples"]
    assert 8 <= len(samples) <= 16
    assert timeline["interval_s"] in {2.0 * 2**k for k in range(1, 20)}, "halved: twice, four times... the interval asked"
    gaps = {round(b["t"] - a["t"], 6) for a, b in zip(samples, samples[1:], strict=False)}
    assert gaps == {timeline["interval_s"]}, "evenly spaced at the interval it reports"
    # The whole run: from its start to its last interval, whatever the halvings dropped.
    assert samples[0]["t"] <= timeline["interval_s"] and samples[-1]["t"] > day - timeline["interval_s"]


def test_a_short_run_keeps_every_sample_at_the_interval_asked():
    timeline = _sampled(8.0, max_samples=16).timeline()
    assert timeline["interval_s"] == 2.0 and [s["t"] for s in timeline["samples"]] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_each_sample_has_the_shape_the_ledger_reads_and_its_stage():
    clock = FakeClock()
    sampler = ResourceSampler(gpus=None, clock=clock)
    sampler._t0 = clock.now
    sampler.sample()
    sampler.stage, clock.now = "train", clock.now + 2
    s = sampler.sample()
    assert set(s) == {"t", "stage", "rss_mib", "cpu_pct", "gpus"}
    assert s["stage"] == "train" and s["t"] == 2.0 and s["gpus"] == []
    assert s["rss_mib"] > 10, "this process's resident memory, in MiB (a Python with torch imported is far above 10)"
    assert [x["stage"] for x in sampler.timeline()["samples"]] == ["start", "train"]


def test_the_thread_samples_in_the_background_and_stop_joins_it():
    sampler = ResourceSampler(interval_s=0.01, gpus=None).start()
    deadline = time.monotonic() + 10
    while len(sampler.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    timeline = sampler.stop()
    assert len(timeline["samples"]) >= 3
    assert not any(t.name == "resource-sampler" and t.is_alive() for t in threading.enumerate())
    time.sleep(0.05)
    assert sampler.stop() == timeline, "stopped: no more samples, and stopping twice is harmless"


def test_cpu_is_measured_over_the_interval():
    """psutil's first reading is a meaningless 0.0; the sampler primes it, so a busy interval reads busy."""
    sampler = ResourceSampler(gpus=None).start()
    sampler.stop()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert sampler.sample()["cpu_pct"] > 20


def test_gpus_come_from_nvml_per_device():
    nvml = FakeNvml()
    gpus = NvmlGpus.open(nvml)
    sampler = ResourceSampler(gpus=gpus).start()
    timeline = sampler.stop()
    assert timeline["samples"][0]["gpus"] == [{"index": 0, "util_pct": 35.0, "mem_mib": 1024.0},
                                              {"index": 1, "util_pct": 90.0, "mem_mib": 30000.0}]
    assert nvml.shutdowns == 1, "stop releases NVML"
    assert peaks(timeline)["gpus"] == {0: {"util_pct": 35.0, "mem_mib": 1024.0}, 1: {"util_pct": 90.0, "mem_mib": 30000.0}}
    assert "GPU 1 90% utilisation, 30,000 MiB" in peaks_line(timeline)


def test_the_reports_gpu_line_takes_mean_utilisation_from_the_training_stage_of_the_timeline():
    from trainer.report import render_markdown

    def sample(stage, *utils):
        return {"t": 0.0, "stage": stage, "rss_mib": 1.0, "cpu_pct": 1.0,
                "gpus": [{"index": i, "util_pct": u, "mem_mib": 1.0} for i, u in enumerate(utils)]}

    timeline = {"interval_s": 2.0, "samples": [sample("base_check", 10.0, 10.0), sample("train", 80.0, 90.0),
                                               sample("train", 70.0, 100.0), sample("merge", 0.0, 0.0)]}
    assert mean_gpu_utilisation(timeline, "train") == 85.0, "both GPUs, training samples only"
    assert mean_gpu_utilisation(timeline, "evaluate") is None and mean_gpu_utilisation({}, "train") is None
    train = {"steps": 2, "wall_seconds": 10.0, "tokens_per_second": 1.0, "answer_tokens_per_second": 1.0, "peak_memory_bytes": 2**30,
             "gpu": {"count": 2, "name": "NVIDIA L4", "peak_allocated_bytes": 9 * 2**30}}
    report = {"run_id": "r", "status": "succeeded", "train": train, "parameters": {"trainable": 1, "total": 2}}
    assert "- GPU: 2x NVIDIA L4, peak allocated 9.0 GiB, mean utilisation while training 85%" in render_markdown(report | {"resources": timeline})
    assert "- GPU: 2x NVIDIA L4, peak allocated 9.0 GiB\n" in render_markdown(report), "no timeline: no made-up utilisation"


def test_no_gpu_lines_and_no_error_without_nvml_or_a_driver(monkeypatch):
    assert NvmlGpus.open(FakeNvml(fail_init=True)) is None, "NVML installed, no driver (a CPU machine)"
    assert NvmlGpus.open(FakeNvml(util=(), used_mib=())) is None, "a driver, no device"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed (the `gpu` extra is left out)
    assert NvmlGpus.open() is None
    sampler = ResourceSampler(interval_s=0.01).start()  # "auto": looks for NVML and finds none
    timeline = sampler.stop()
    assert timeline["samples"] and all(s["gpus"] == [] for s in timeline["samples"])
    assert "GPU" not in peaks_line(timeline)


def test_a_gpu_that_fails_mid_run_leaves_its_lines_out_and_sampling_goes_on(caplog):
    nvml = FakeNvml()
    gpus = NvmlGpus.open(nvml)
    clock = FakeClock()
    sampler = ResourceSampler(gpus=gpus, clock=clock).start()
    sampler.stop()  # no thread: the samples below are taken by hand
    sampler._gpus = gpus

    def lost(_handle):
        raise FakeNvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetUtilizationRates = lost
    clock.now += 2
    assert sampler.sample()["gpus"] == [] and sampler.sample()["gpus"] == []
    assert [len(s["gpus"]) for s in sampler.timeline()["samples"]] == [2, 0, 0]
    assert "GPU sampling stopped: NVMLError: GPU is lost" in caplog.text


@pytest.mark.parametrize(("kw", "says"), [({"interval_s": 0}, "interval_s"), ({"max_samples": 1}, "max_samples")])
def test_settings_that_cannot_sample_are_refused(kw, says):
    with pytest.raises(ValueError, match=says):
        ResourceSampler(gpus=None, **kw)


def test_peaks_of_an_empty_timeline():
    assert peaks_line({"interval_s": 2.0, "samples": []}) is None
    assert peaks({"samples": []}) == {"rss_mib": None, "cpu_pct": None, "gpus": {}}


def _gpu_timeline() -> dict:
    return {"interval_s": 2.0, "samples": [
        {"t": 2.0 * i, "stage": "base_check" if i < 3 else "train", "rss_mib": 800.0 + i, "cpu_pct": 150.0,
         "gpus": [{"index": 0, "util_pct": 90.0, "mem_mib": 20000.0 + i}, {"index": 1, "util_pct": 80.0, "mem_mib": 19000.0}]}
        for i in range(8)]}


def test_the_timeline_panel_draws_memory_and_utilisation_per_device_and_marks_the_stages():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.resources import draw_timeline

    fig, ax = plt.subplots()
    draw_timeline(ax, _gpu_timeline())
    (pct,) = [other for other in fig.axes if other is not ax]  # the utilisation axis shares x
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == ["RSS", "GPU 0 memory", "GPU 1 memory"]
    assert [line.get_label() for line in pct.get_lines()] == ["CPU %", "GPU 0 util %", "GPU 1 util %"]
    assert list(ax.get_lines()[0].get_ydata()) == [800.0 + i for i in range(8)]
    assert [t.get_text() for t in ax.texts] == ["base_check", "train"]
    plt.close(fig)


def test_the_report_has_the_peaks_and_a_timeline_panel(tmp_path):
    from PIL import Image

    from trainer.report import render_markdown, write_report

    report = {"run_id": "r1", "status": "succeeded", "resources": _gpu_timeline(),
              "train": {"steps": 2, "wall_seconds": 10, "tokens_per_second": 1.0, "answer_tokens_per_second": 1.0,
                        "peak_memory_bytes": 2**30, "loss_history": [[1, 2.0], [2, 1.5]]},
              "parameters": {"trainable": 1, "total": 10}}
    assert ("- resources (peaks over 8 samples, every 2 s): RSS 807 MiB, CPU 150% (of one core); GPU 0 90% utilisation, "
            "20,007 MiB; GPU 1 80% utilisation, 19,000 MiB") in render_markdown(report)
    write_report(tmp_path, report)
    assert Image.open(tmp_path / "report.png").size == (1500, 400), "a third panel beside loss and accuracy"
    write_report(tmp_path, {k: v for k, v in report.items() if k != "resources"})
    assert Image.open(tmp_path / "report.png").size == (1000, 400), "a report from before timelines: the two panels it had"
