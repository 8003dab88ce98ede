"""A small terminal progress display for long loops (training, sampling).

On a terminal it redraws one line; otherwise (CI logs, pipes) it prints a line
at most every `min_interval` seconds so logs stay short.
"""

import sys
import time


class Progress:
  """progress = Progress('train', total=5000); progress.update(done, loss=0.1); progress.close().

  `initial` is the count already done when the loop starts (a resumed run): the
  rate and ETA count only the work done since, not the steps of earlier runs.
  `time_left`: seconds from now after which the loop stops anyway (a time
  budget); the ETA is then the sooner of the two ends.
  """

  def __init__(self, desc: str, total: int, stream=None, min_interval: float = 5.0,
               initial: int = 0, time_left: float | None = None):
    self.desc, self.total = desc, max(int(total), 1)
    self.initial = int(initial)
    self.time_left = time_left
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.min_interval = 0.0 if self.tty else min_interval
    self.start = time.time()
    self._last_print = 0.0

  def update(self, done: int, **values):
    now = time.time()
    if now - self._last_print < self.min_interval and done < self.total:
      return
    self._last_print = now
    elapsed = now - self.start
    rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float('inf')
    if self.time_left is not None:
      eta = min(eta, max(self.time_left - elapsed, 0.0))
    width = 24
    filled = int(width * done / self.total)
    extras = ' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in values.items())
    line = (f'{self.desc} [{"#" * filled}{"." * (width - filled)}] {done}/{self.total} '
            f'{rate:.1f}/s eta {eta:.0f}s {extras}')
    if self.tty:
      self.stream.write('\r' + line.ljust(100))
    else:
      self.stream.write(line + '\n')
    self.stream.flush()

  def close(self):
    if self.tty:
      self.stream.write('\n')
      self.stream.flush()
