"""Per-step callbacks of the samplers: progress bars and trajectories without host work
unless asked for.

A sampler with steps (annealed Langevin, PC, Heun, ...) takes `callback=None`
and calls `step_hook(callback)(step, num_steps, x)` once per step inside its
graph loop. With no callback the hook adds no op at all; with one, it runs
`callback(step, num_steps, x)` on the host (a tf.py_function) with Python ints
(step counts from 1) and x as a numpy array [N, ...], so a callback costs one
host call per step and no more. A callback whose `wants_x` attribute is False
(`StepProgress`) is called as callback(step, num_steps): x then never leaves
the device. Callbacks return nothing; what they raise stops the sampler with
that error.

The samplers are tf.functions keyed on their Python arguments, the callback
included: pass the same callback object from call to call (as
`StepProgress` is meant to be used) or every call traces the chain again.
"""

import tensorflow as tf


def step_hook(callback):
  """fn(step int32 scalar, num_steps int32 scalar, x [N, ...]) for a sampler's loop body."""
  if callback is None:
    return lambda step, num_steps, x: None

  if not getattr(callback, 'wants_x', True):
    def on_host_counts(step, num_steps):
      callback(int(step), int(num_steps))
      return []

    def hook(step, num_steps, x):
      del x
      tf.py_function(on_host_counts, [step, num_steps], [])

    return hook

  def on_host(step, num_steps, x):
    callback(int(step), int(num_steps), x.numpy())
    return []

  def hook(step, num_steps, x):
    # Stateful, so tf.function keeps it and runs it in order, every iteration.
    tf.py_function(on_host, [step, num_steps, x], [])

  return hook


class StepProgress:
  """A callback that moves a runtime.progress.Progress along the steps of one batch.

  One object serves every batch (trace reuse, see the module docstring): before
  a batch, `target(progress, start, size)` says which Progress to move and which
  rows the batch holds; each step then shows start + size · step / num_steps
  rows done, so a single batch of a long chain shows its progress too. Without
  a target (training's snapshots) the steps are not shown.
  """

  wants_x = False

  def __init__(self):
    self._progress, self._start, self._size = None, 0, 0

  def target(self, progress, start: int = 0, size: int = 0):
    """Steps from now on move `progress` (None: nowhere) over rows [start, start + size)."""
    self._progress, self._start, self._size = progress, int(start), int(size)

  def __call__(self, step: int, num_steps: int):
    if self._progress is not None:
      self._progress.update(self._start + self._size * step // max(num_steps, 1))
