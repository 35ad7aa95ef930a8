"""Training progress off a terminal (Vertex logs): a line every total//20 steps and at the last step, with an ETA from
the steps done since the start (or resume); silent on ranks other than the main one."""

from __future__ import annotations

import io
import re

import pytest

from trainer import progress
from trainer.progress import StepProgress

LINE = re.compile(r"  step (\d+)/(\d+)  loss (\S+)  (\S+) tok/s(?:  eval (\S+))?  eta (\d+)s")


class _Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def _run(total: int, start: int = 0, enabled: bool = True) -> list[str]:
    lines: list[str] = []
    with StepProgress(total, start, enabled=enabled, log=lines.append) as bar:
        for step in range(start + 1, total + 1):
            bar.update(step, loss=1.0, tokens_per_s=100.0, eval_loss=None)
    return lines


def _steps(lines: list[str]) -> list[int]:
    steps = []
    for line in lines:
        m = LINE.fullmatch(line)
        assert m, line
        steps.append(int(m.group(1)))
    return steps


@pytest.mark.usefixtures("not_a_terminal")
@pytest.mark.parametrize(("total", "expected"), [
    (100, list(range(5, 101, 5))),  # every 5: twenty lines
    (45, list(range(2, 45, 2)) + [45]),  # every 2, and the last step although 45 is odd
    (59, list(range(2, 59, 2)) + [59]),
    (20, list(range(1, 21))),
    (7, list(range(1, 8))),  # under 20 steps: every step
    (1, [1]),
])
def test_a_line_every_twentieth_and_at_the_end(total, expected):
    assert _steps(_run(total)) == expected


@pytest.mark.usefixtures("not_a_terminal")
def test_a_resumed_run_logs_on_the_same_grid_and_the_end():
    lines = _run(total=103, start=37)
    assert _steps(lines) == [40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100, 103]
    assert all(LINE.fullmatch(line).group(2) == "103" for line in lines)


@pytest.mark.usefixtures("not_a_terminal")
def test_the_line_shows_loss_throughput_and_eval_loss():
    lines: list[str] = []
    bar = StepProgress(total=10, start=0, log=lines.append)
    bar.update(1, loss=1.23456, tokens_per_s=12345.6, eval_loss=None)
    bar.update(2, loss=0.5, tokens_per_s=99.4, eval_loss=0.4321)
    first, second = (LINE.fullmatch(line) for line in lines)
    assert first.group(3, 4, 5) == ("1.235", "12,346", None)
    assert second.group(3, 4, 5) == ("0.500", "99", "0.432")


@pytest.mark.usefixtures("not_a_terminal")
def test_the_eta_is_the_time_per_step_since_the_start_times_the_steps_left(clock):
    lines: list[str] = []
    bar = StepProgress(total=50, start=10, log=lines.append)  # resumed at step 10; every 2 steps
    clock.now += 20.0
    bar.update(20, loss=1.0, tokens_per_s=1.0, eval_loss=None)  # 10 steps in 20 s: 2 s a step, 30 left
    clock.now += 60.0
    bar.update(40, loss=1.0, tokens_per_s=1.0, eval_loss=None)  # 30 steps in 80 s, 10 left
    clock.now += 5.0
    bar.update(50, loss=1.0, tokens_per_s=1.0, eval_loss=None)
    assert [int(LINE.fullmatch(line).group(6)) for line in lines] == [60, 27, 0]


@pytest.mark.usefixtures("not_a_terminal")
def test_no_steps_done_yet_is_not_a_division_by_zero(clock):
    lines: list[str] = []
    bar = StepProgress(total=40, start=4, log=lines.append)
    clock.now += 3.0
    bar.update(4, loss=1.0, tokens_per_s=1.0, eval_loss=None)  # the resume step itself
    assert int(LINE.fullmatch(lines[0]).group(6)) == 3 * 36


@pytest.mark.usefixtures("not_a_terminal")
def test_other_ranks_log_nothing():
    assert _run(total=100, enabled=False) == []


def test_other_ranks_draw_no_bar_even_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", _Tty())
    lines: list[str] = []
    with StepProgress(total=10, start=0, enabled=False, log=lines.append) as bar:
        assert not bar.live
        bar.update(10, loss=1.0, tokens_per_s=1.0, eval_loss=None)
    assert lines == [] and bar._bar is None


def test_on_a_terminal_the_bar_replaces_the_log_lines(monkeypatch):
    monkeypatch.setattr("sys.stderr", _Tty())
    lines: list[str] = []
    with StepProgress(total=10, start=2, log=lines.append) as bar:
        assert bar.live
        for step in range(3, 11):
            bar.update(step, loss=1.0, tokens_per_s=1.0, eval_loss=None)
        task = bar._bar.tasks[0]
        assert (task.total, task.completed) == (10, 10)
    assert lines == []
