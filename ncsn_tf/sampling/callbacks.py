"""Per-step callbacks of the samplers: progress bars and trajectories without host work
unless asked for.

A sampler with steps (annealed Langevin, PC, Heun, ...) takes `callback=None`
and calls `step_hook(callback)(step, num_steps, x)` once per step inside its
graph loop. With no callback the hook adds no op at all; with one, it runs
`callback(step, num_steps, x)` on the host (a tf.py_function) with Python ints
(step counts from 1) and x as a numpy array [N, ...], so a callback costs one
host call per step and no more. Callbacks return nothing; what they raise
stops the sampler with that error.
"""

import tensorflow as tf


def step_hook(callback):
  """fn(step int32 scalar, num_steps int32 scalar, x [N, ...]) for a sampler's loop body."""
  if callback is None:
    return lambda step, num_steps, x: None

  def on_host(step, num_steps, x):
    callback(int(step), int(num_steps), x.numpy())
    return []

  def hook(step, num_steps, x):
    # Stateful, so tf.function keeps it and runs it in order, every iteration.
    tf.py_function(on_host, [step, num_steps, x], [])

  return hook
