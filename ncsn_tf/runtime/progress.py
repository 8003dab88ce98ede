"""A small progress display for long work (training, sampling, evaluation, export).

On a terminal it redraws one line; otherwise (CI logs, pipes) it prints a line
at most every `min_interval` seconds so logs stay short. A heartbeat thread
reprints the line when nothing has been shown for `HEARTBEAT_SECONDS`, so work
that cannot report steps (an adaptive ODE solve, tracing a graph, writing a
SavedModel) still shows that it is alive and for how long it has run.
"""

import sys
import threading
import time

#: Seconds between lines off a terminal, and the longest silence before the heartbeat
#: reprints the line (the issue's "a log line every ~10 s").
LOG_INTERVAL_SECONDS = 10.0
HEARTBEAT_SECONDS = 10.0
#: Width of the bar, and of the line on a terminal (padded to wipe a longer old line).
_BAR_WIDTH = 24
_LINE_WIDTH = 100


class Progress:
  """progress = Progress('train', total=5000); progress.update(done, loss=0.1); progress.close().

  `initial` is the count already done when the loop starts (a resumed run): the
  rate and ETA count only the work done since, not the steps of earlier runs.
  `time_left`: seconds from now after which the loop stops anyway (a time
  budget); the ETA is then the sooner of the two ends. `heartbeat`: reprint the
  line (with the time elapsed) after HEARTBEAT_SECONDS without an update; the
  thread stops at `close` (or with the process: it is a daemon). Also a context
  manager that closes on exit. update() may be called from any thread (a
  sampler's per-step callback runs on one of TensorFlow's).
  """

  def __init__(self, desc: str, total: int, stream=None, min_interval: float | None = None,
               initial: int = 0, time_left: float | None = None, heartbeat: bool = True):
    self.desc, self.total = desc, max(int(total), 1)
    self.initial = int(initial)
    self.time_left = time_left
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    if min_interval is None:
      min_interval = LOG_INTERVAL_SECONDS
    self.min_interval = 0.0 if self.tty else min_interval
    self.start = time.time()
    self._last_print = 0.0
    self._done, self._values = self.initial, {}
    self._printed = None  # (done, values) of the last line shown
    self._lock = threading.Lock()
    self._closed = threading.Event()
    self._thread = None
    if heartbeat:
      self._thread = threading.Thread(target=self._beat, name=f'progress {desc}', daemon=True)
      self._thread.start()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def update(self, done: int, **values):
    """Records `done` (and values shown as key=value); prints unless a line was printed
    within min_interval (the final count always prints)."""
    with self._lock:
      final = done >= self.total and self._printed != (done, values)  # Shown once.
      self._done, self._values = int(done), values
      now = time.time()
      if now - self._last_print < self.min_interval and not final:
        return
      if done >= self.total and not final:
        return
      self._print(now)

  def _beat(self):
    while not self._closed.wait(HEARTBEAT_SECONDS / 2):
      with self._lock:
        now = time.time()
        if not self._closed.is_set() and now - self._last_print >= HEARTBEAT_SECONDS:
          try:
            self._print(now)
          except (ValueError, OSError):  # The stream was closed under us (its owner ended).
            self._closed.set()

  def _print(self, now: float):
    self._last_print = now
    self._printed = (self._done, self._values)
    done = self._done
    elapsed = now - self.start
    rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float('inf')
    if self.time_left is not None:
      eta = min(eta, max(self.time_left - elapsed, 0.0))
    filled = int(_BAR_WIDTH * min(done, self.total) / self.total)
    extras = ' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                      for k, v in self._values.items())
    eta_text = f'eta {eta:.0f}s' if eta != float('inf') else f'{elapsed:.0f}s elapsed'
    line = (f'{self.desc} [{"#" * filled}{"." * (_BAR_WIDTH - filled)}] {done}/{self.total} '
            f'{rate:.1f}/s {eta_text} {extras}').rstrip()
    if self.tty:
      self.stream.write('\r' + line.ljust(_LINE_WIDTH))
    else:
      self.stream.write(line + '\n')
    self.stream.flush()

  def close(self):
    """Stops the heartbeat; on a terminal ends the line."""
    if self._closed.is_set():
      return
    self._closed.set()
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join()
    if self.tty:
      with self._lock:
        self.stream.write('\n')
        self.stream.flush()
