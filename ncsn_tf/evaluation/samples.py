"""Samples of a trained run, written to its workdir with their pictures and the dataset's judge.

`sample_run(config, state=None)`: --num_samples samples with --sampler, or
with --guidance one row per class, to <workdir>/samples/ (or samples_guided/):
samples.npz, a picture (toys: the chain's scatter; images: a grid and the
chain as a GIF) and, where the dataset has a clean judge (ncsn_tf/catalog.py),
its verdict. `image_snapshot_hook` puts a grid and the chain into TensorBoard
at every checkpoint during training.
"""


import os

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.data import toy
from ncsn_tf.evaluation import judges
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.sampling import draw
from ncsn_tf.sampling import guidance


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
                                       strategy=devices.strategy_for(config))
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


def sample_run(config: config_lib.Config, state=None) -> str:
  """Draws --num_samples samples with the (EMA) model; returns the output dir.

  On the run's devices (sampling/distributed.py): without `state` (--mode=sample)
  the weights are restored into the run's strategy and, under multi_worker,
  every worker draws its share of the batches and the chief alone writes; with
  `state` (after training: the chief alone) on this machine's replicas.
  """
  if config.sampling.guidance != 'none':  # Class-conditional (ncsn_tf/sampling/guidance.py).
    return guided_run(config, state)
  strategy = devices.strategy_for(config)
  cross_worker = state is None
  state = state or checkpoints.restore_for_inference(config, strategy)
  samples, trajectory = draw.draw_samples(config, state.score_model, state.sigmas,
                                     num=config.sampling.num_samples, seed=config.seed,
                                     strategy=strategy, cross_worker=cross_worker)
  out_dir = os.path.join(config.workdir, 'samples')
  if not devices.is_chief(strategy):
    return out_dir
  artifacts.write_npz(os.path.join(out_dir, 'samples.npz'), samples=samples,
                      trajectory=trajectory)
  if config.data.is_toy:
    radius = toy.get_toy(config.data.dataset).plot_radius
    frames = {f'{k + 1}/{len(trajectory)}': t for k, t in enumerate(trajectory)}
    plots.save_figure(plots.samples_figure(frames, radius, 'annealed Langevin chain'),
                      os.path.join(out_dir, 'chain.png'))
  else:
    images = data_lib.to_unit_range(samples, config.data)
    plots.save_png(plots.image_grid(images[:64]), os.path.join(out_dir, 'samples.png'))
    frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
    plots.save_gif(frames, os.path.join(out_dir, 'chain.gif'))
    judges.judge_samples(images, None, config, out_dir)
  logging.info('wrote %d samples to %s', len(samples), out_dir)
  return out_dir


def guided_run(config: config_lib.Config, state=None) -> str:
  """--guidance: samples of --class_label, or of every class for -1, to <workdir>/samples_guided/.

  samples.npz holds `samples`, `labels` (int32) and `trajectory`;
  samples.png is a grid with one row per class (--class_label=-1: ceil(N/C)
  samples of each class, at most GRID_COLUMNS shown per row) or of the
  first 64 samples of the one class; chain.gif the chain as for run_sample.
  """
  s = config.sampling
  # The classifier first: its restore fails fast, before the score model's.
  classifier = guidance.load_classifier(config) if s.guidance == 'classifier' else None
  state = state or checkpoints.restore_for_inference(config)
  num_classes = data_lib.num_classes(config.data)
  labels = guidance.class_labels(s.class_label, num_classes, s.num_samples)
  samples, trajectory = guidance.draw_guided_samples(config, state.score_model, labels,
                                                     seed=config.seed, classifier=classifier)
  out_dir = os.path.join(config.workdir, GUIDED_SAMPLES_DIR)
  artifacts.write_npz(os.path.join(out_dir, 'samples.npz'), samples=samples, labels=labels,
                      trajectory=trajectory)
  images = data_lib.to_unit_range(samples, config.data)
  if s.class_label < 0:
    rows = images.reshape((num_classes, -1) + images.shape[1:])[:, :GRID_COLUMNS]
    grid = plots.image_grid(rows.reshape((-1,) + images.shape[1:]), nrow=rows.shape[1])
  else:
    grid = plots.image_grid(images[:64])
  plots.save_png(grid, os.path.join(out_dir, 'samples.png'))
  frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
  plots.save_gif(frames, os.path.join(out_dir, 'chain.gif'))
  judges.judge_samples(images, labels, config, out_dir)
  logging.info('wrote %d samples of %s (--guidance=%s, w=%g) to %s', len(samples),
               'every class' if s.class_label < 0 else f'class {s.class_label}', s.guidance,
               s.guidance_scale, out_dir)
  return out_dir
