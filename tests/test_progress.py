"""The progress line's rate and ETA, on a controlled clock; the heartbeat of silent work."""

import io
import time

from ncsn_tf.runtime import progress as progress_lib


class _Clock:

  def __init__(self, now=1000.0):
    self.now = now

  def __call__(self):
    return self.now


def _progress(monkeypatch, *args, **kwargs):
  """(clock, stream, Progress) with time.time() under the test's control.

  The stream is not a tty, so the display prints one line per update.
  """
  clock = _Clock()
  monkeypatch.setattr(progress_lib.time, 'time', clock)
  stream = io.StringIO()
  return clock, stream, progress_lib.Progress(*args, stream=stream, heartbeat=False, **kwargs)


def _lines(stream):
  return stream.getvalue().strip().splitlines()


def test_rate_and_eta_count_only_this_runs_steps(monkeypatch):
  # A run resumed at step 3000 of 9000 that then does 100 steps in 10 s: 10 steps/s,
  # 5900 steps left -> 590 s. Counting the resumed steps would claim 310/s.
  clock, stream, progress = _progress(monkeypatch, 'train', 9000, min_interval=0.0,
                                      initial=3000)
  clock.now += 10.0
  progress.update(3100, loss=1.5)
  assert _lines(stream)[-1] == 'train [########................] 3100/9000 10.0/s eta 590s loss=1.5'


def test_fresh_run_rate(monkeypatch):
  clock, stream, progress = _progress(monkeypatch, 'sample', 64, min_interval=0.0)
  clock.now += 4.0
  progress.update(16)
  assert _lines(stream)[-1].endswith('16/64 4.0/s eta 12s')


def test_non_tty_updates_are_throttled(monkeypatch):
  clock, stream, progress = _progress(monkeypatch, 'train', 100, min_interval=5.0)
  clock.now += 6.0
  progress.update(10)
  clock.now += 1.0
  progress.update(20)  # within 5 s of the last line: not printed
  progress.update(100)  # the final count always prints
  assert [line.split()[2] for line in _lines(stream)] == ['10/100', '100/100']


def test_a_time_budget_shortens_the_eta(monkeypatch):
  # 100 steps in 10 s of 20000 would take 1990 s more; the budget ends in 50.
  clock, stream, progress = _progress(monkeypatch, 'train', 20000, min_interval=0.0,
                                      time_left=60.0)
  clock.now += 10.0
  progress.update(100)
  assert _lines(stream)[-1].endswith('100/20000 10.0/s eta 50s')
  clock.now += 100.0  # Past the budget: not a negative ETA.
  progress.update(200)
  assert _lines(stream)[-1].endswith('eta 0s')


def test_off_a_terminal_a_line_comes_at_most_every_ten_seconds_by_default(monkeypatch):
  clock, stream, progress = _progress(monkeypatch, 'sample', 100)
  for done in range(1, 60):
    clock.now += 0.5
    progress.update(done)
  assert [line.split()[2] for line in _lines(stream)] == ['1/100', '21/100', '41/100']


def test_the_heartbeat_reprints_the_line_while_nothing_reports(monkeypatch):
  """Work without steps to report (an adaptive solve, a SavedModel being written) still
  shows a line every HEARTBEAT_SECONDS, with the time elapsed; close() stops it."""
  monkeypatch.setattr(progress_lib, 'HEARTBEAT_SECONDS', 0.05)
  stream = io.StringIO()
  progress = progress_lib.Progress('export', 3, stream=stream)
  progress.update(1, stage='saving')
  time.sleep(0.5)
  progress.close()
  lines = _lines(stream)
  assert len(lines) >= 3, lines
  assert all(line.startswith('export [########') and line.endswith('stage=saving')
             for line in lines), lines
  time.sleep(0.2)
  assert _lines(stream) == lines  # Closed: silent.
