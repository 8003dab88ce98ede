"""TODO docstring (from ncsn_tf.modes)."""

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import draw


def chain_strip(trajectory, num_rows: int = 4) -> np.ndarray:
  """uint8 [rows·H, T·W, 3]: each row one sample's chain from noise (left) to image."""
  t, n = trajectory.shape[:2]
  rows = [np.concatenate(list(np.clip(trajectory[:, k], 0, 1)), axis=1) for k in range(min(n, num_rows))]
  strip = np.concatenate(rows, axis=0)
  if strip.shape[-1] == 1:
    strip = np.repeat(strip, 3, axis=-1)
  return (strip * 255 + 0.5).astype(np.uint8)


def image_snapshot_hook(config: config_lib.Config):
  """At each checkpoint: a grid of samples and the Langevin chain strip in TensorBoard."""
  num = config.sampling.summary_samples

  def hook(state, writer):
    if num == 0:
      return
    step = int(state.step.numpy())
    # On the chief's replicas (the hook runs on the chief alone).
    samples, trajectory = draw.draw_samples(config, state.score_model, state.sigmas, num=num,
                                       seed=config.seed + step, show_progress=False,
                                       strategy=distributed.sampling_strategy(config))
    samples, trajectory = (data_lib.to_unit_range(x, config.data) for x in (samples, trajectory))
    with writer.as_default(step=step):
      tf.summary.image('samples', plots.image_grid(samples)[None], step=step)
      tf.summary.image('langevin_chain', chain_strip(trajectory)[None], step=step)
    writer.flush()

  return hook


#: Most samples per class shown in the per-class grid (one row per class).
GRID_COLUMNS = 16


#: Where --guidance samples go, beside the unconditional ones in samples/.
GUIDED_SAMPLES_DIR = 'samples_guided'
