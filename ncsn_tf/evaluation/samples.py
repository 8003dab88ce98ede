"""Samples of a trained run, written to its workdir with their pictures and the dataset's judge.

`sample_run(config, state=None)`: --num_samples samples with --sampler, or
with --guidance one row per class, to a result directory of <workdir>/samples/
(or samples_guided/) named for the sampler, its settings, the guidance, the
seed and the checkpoint step (evaluation/results.py): samples.npz, a picture
(toys: the chain's scatter; images: a grid and the chain as a GIF) and, where
the dataset has a clean judge (ncsn_tf/catalog.py), its verdict.
`image_snapshot_hook` puts a grid and the chain into TensorBoard at every
checkpoint during training.
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
from ncsn_tf.evaluation import results
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.sampling import draw
from ncsn_tf.sampling import guidance
from ncsn_tf.sampling import samplers


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


def warn_if_not_finite(samples, config: config_lib.Config) -> int:
  """Logs a warning naming how many samples hold NaN or infinity (a diverged sampler);
  returns that count. The samples are written as drawn, so they can be inspected."""
  bad = int(np.sum(~np.all(np.isfinite(samples.reshape(len(samples), -1)), axis=1)))
  if bad:
    logging.warning('%d of %d samples are not finite: the sampler diverged (%s); lower the '
                    'step (--step_lr, --snr) or use more steps', bad, len(samples),
                    samplers.describe(config.sampling))
  return bad


#: Most samples per class shown in the per-class grid (one row per class).
GRID_COLUMNS = 16


#: Where --guidance samples go, beside the unconditional ones in samples/.
GUIDED_SAMPLES_DIR = 'samples_guided'
SAMPLES_DIR = 'samples'


def guidance_part(sampling: config_lib.SamplingConfig) -> str:
  """'guidance=free,w=2.0,class=7' (class=all for one row per class): a guided result's name."""
  label = 'all' if sampling.class_label < 0 else sampling.class_label
  return ','.join([results.part('guidance', sampling.guidance),
                   results.part('w', sampling.guidance_scale), results.part('class', label)])


def sample_run(config: config_lib.Config, state=None) -> str:
  """Draws --num_samples samples with the (EMA) model; returns the result's directory.

  <workdir>/samples/<sampler and settings>,seed=S,step=N/ (evaluation/results.py):
  samples.npz (samples, trajectory), a picture (toys: the chain's scatter; images:
  a grid and the chain as a GIF), the dataset judge's verdict and settings.json;
  samples/latest points to it.

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
  step = int(state.step.numpy())
  samples, trajectory = draw.draw_samples(config, state.score_model, state.sigmas,
                                     num=config.sampling.num_samples, seed=config.seed,
                                     strategy=strategy, cross_worker=cross_worker)
  name = results.name_of(results.sampler_part(config.sampling), seed=config.seed, step=step)
  out_dir = os.path.join(config.workdir, SAMPLES_DIR, name)
  if not devices.is_chief(strategy):
    return out_dir
  warn_if_not_finite(samples, config)
  settings = {**results.sampler_settings(config), 'step': step, 'num_samples': len(samples)}
  with results.writing(config.workdir, SAMPLES_DIR, name, settings) as staging:
    artifacts.write_npz(os.path.join(staging, 'samples.npz'), samples=samples,
                        trajectory=trajectory)
    if config.data.is_toy:
      radius = toy.get_toy(config.data.dataset).plot_radius
      frames = {f'{k + 1}/{len(trajectory)}': t for k, t in enumerate(trajectory)}
      # Annealed Langevin keeps its chain; the SDE samplers only their last state.
      title = 'annealed Langevin chain' if len(trajectory) > 1 else \
          f'{config.sampling.sampler} samples'
      plots.save_figure(plots.samples_figure(frames, radius, title),
                        os.path.join(staging, 'chain.png'))
    else:
      images = data_lib.to_unit_range(samples, config.data)
      plots.save_png(plots.image_grid(images[:64]), os.path.join(staging, 'samples.png'))
      frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
      plots.save_gif(frames, os.path.join(staging, 'chain.gif'))
      judges.judge_samples(images, None, config, staging)
  logging.info('wrote %d samples to %s', len(samples), out_dir)
  return out_dir


def guided_run(config: config_lib.Config, state=None) -> str:
  """--guidance: samples of --class_label, or of every class for -1; returns the result's dir.

  <workdir>/samples_guided/guidance=G,w=W,class=C,<sampler...>,seed=S,step=N/
  (samples_guided/latest points to it): samples.npz holds `samples`, `labels`
  (int32) and `trajectory`; samples.png is a grid with one row per class
  (--class_label=-1: ceil(N/C) samples of each class, at most GRID_COLUMNS
  shown per row) or of the first 64 samples of the one class; chain.gif the
  chain as for sample_run.
  """
  s = config.sampling
  # The classifier first: its restore fails fast, before the score model's.
  classifier = guidance.load_classifier(config) if s.guidance == 'classifier' else None
  state = state or checkpoints.restore_for_inference(config)
  step = int(state.step.numpy())
  num_classes = data_lib.num_classes(config.data)
  labels = guidance.class_labels(s.class_label, num_classes, s.num_samples)
  samples, trajectory = guidance.draw_guided_samples(config, state.score_model, labels,
                                                     seed=config.seed, classifier=classifier)
  warn_if_not_finite(samples, config)
  name = results.name_of(guidance_part(s), results.sampler_part(s), seed=config.seed, step=step)
  settings = {**results.sampler_settings(config), 'step': step, 'num_samples': len(samples),
              'guidance': s.guidance, 'guidance_scale': s.guidance_scale,
              'class_label': s.class_label}
  with results.writing(config.workdir, GUIDED_SAMPLES_DIR, name, settings) as staging:
    artifacts.write_npz(os.path.join(staging, 'samples.npz'), samples=samples, labels=labels,
                        trajectory=trajectory)
    images = data_lib.to_unit_range(samples, config.data)
    if s.class_label < 0:
      rows = images.reshape((num_classes, -1) + images.shape[1:])[:, :GRID_COLUMNS]
      grid = plots.image_grid(rows.reshape((-1,) + images.shape[1:]), nrow=rows.shape[1])
    else:
      grid = plots.image_grid(images[:64])
    plots.save_png(grid, os.path.join(staging, 'samples.png'))
    frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
    plots.save_gif(frames, os.path.join(staging, 'chain.gif'))
    judges.judge_samples(images, labels, config, staging)
  out_dir = os.path.join(config.workdir, GUIDED_SAMPLES_DIR, name)
  if s.class_label < 0:
    what = f'{len(samples) // num_classes} of each of the {num_classes} classes'
  else:
    what = f'class {s.class_label}'
  logging.info('wrote %d samples (%s; --guidance=%s, w=%g) to %s', len(samples), what,
               s.guidance, s.guidance_scale, out_dir)
  return out_dir
