"""One function per `--mode`; `run.py` only parses flags and calls these.

train   -> train_lib.train, then sample, eval and export
sample  -> <workdir>/samples/: samples.npz and a picture (scatter or grid+GIF)
eval    -> toy: exact metrics and figures; images: held-out DSM loss
export  -> <export_dir>/<version>/ SavedModel
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import export as export_lib
from ncsn_tf import plots
from ncsn_tf import toy_eval
from ncsn_tf import train_lib
from ncsn_tf import data as data_lib
from ncsn_tf.progress import Progress
from ncsn_tf.sampling import langevin


def draw_samples(config: config_lib.Config, score_model, sigmas, *, num: int, seed: int):
  """Annealed Langevin samples from the learned score, in batches.

  Returns (samples [num, *shape], trajectory [num_snapshots, num, *shape]).
  """
  shape = data_lib.data_shape(config.data)
  s = config.sampling
  radius = 8.0
  if config.data.is_toy:
    from ncsn_tf.data import toy
    radius = toy.get_toy(config.data.dataset).plot_radius
  outputs, trajectories = [], []
  progress = Progress('sample', num)
  done = 0
  sigmas_t = tf.constant(np.asarray(sigmas, np.float32))
  for batch_index, start in enumerate(range(0, num, s.sample_batch_size)):
    size = min(s.sample_batch_size, num - start)
    batch_seed = tf.constant([seed, batch_index], tf.int32)
    x_init = export_lib.initial_state(shape, tf.constant(size), batch_seed, config.data, radius)
    samples, trajectory = langevin.annealed_langevin_dynamics(
        lambda x, i: score_model(x, i), x_init, sigmas_t, n_steps_each=s.n_steps_each,
        step_lr=s.step_lr, seed=tf.constant([seed, 1000 + batch_index]),
        num_snapshots=s.num_snapshots, denoise=s.denoise)
    outputs.append(samples.numpy())
    trajectories.append(trajectory.numpy())
    done += size
    progress.update(done)
  progress.close()
  return np.concatenate(outputs), np.concatenate(trajectories, axis=1)


def run_sample(config: config_lib.Config, state=None) -> str:
  """Draws --num_samples samples with the (EMA) model; returns the output dir."""
  state = state or train_lib.restore_for_inference(config)
  samples, trajectory = draw_samples(config, state.ema_model, state.sigmas,
                                     num=config.sampling.num_samples, seed=config.seed)
  out_dir = os.path.join(config.workdir, 'samples')
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, 'samples.tmp.npz')
  np.savez_compressed(tmp, samples=samples, trajectory=trajectory)
  os.replace(tmp, os.path.join(out_dir, 'samples.npz'))
  if config.data.is_toy:
    from ncsn_tf.data import toy
    radius = toy.get_toy(config.data.dataset).plot_radius
    frames = {f'{k + 1}/{len(trajectory)}': t for k, t in enumerate(trajectory)}
    plots.save_figure(plots.samples_figure(frames, radius, 'annealed Langevin chain'),
                      os.path.join(out_dir, 'chain.png'))
  else:
    images = np.clip(samples, 0, 1)
    plots.save_png(plots.image_grid(images[:64]), os.path.join(out_dir, 'samples.png'))
    frames = [plots.image_grid(np.clip(t[:64], 0, 1)) for t in trajectory]
    plots.save_gif(frames, os.path.join(out_dir, 'chain.gif'))
  logging.info('wrote %d samples to %s', len(samples), out_dir)
  return out_dir


def run_eval(config: config_lib.Config, state=None) -> dict:
  state = state or train_lib.restore_for_inference(config)
  step = int(state.step.numpy())
  writer = tf.summary.create_file_writer(os.path.join(config.workdir, 'tensorboard'))
  if config.data.is_toy:
    return toy_eval.evaluate_toy(config, state.ema_model, state.sigmas, step=step, writer=writer)
  raise NotImplementedError('image evaluation arrives with the images pipeline')


def run_export(config: config_lib.Config, state=None) -> str:
  state = state or train_lib.restore_for_inference(config)
  return export_lib.export(state.ema_model, config, state.sigmas)


def run_train(config: config_lib.Config) -> dict:
  """Trains (or resumes), then samples, evaluates and exports."""
  state = train_lib.train(config)
  run_sample(config, state)
  metrics = run_eval(config, state)
  path = run_export(config, state)
  return {'metrics': metrics, 'export': path}


MODES = {'train': run_train, 'sample': run_sample, 'eval': run_eval, 'export': run_export}
