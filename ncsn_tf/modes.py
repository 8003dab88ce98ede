"""One function per `--mode`; `run.py` only parses flags and calls these.

train   -> train_lib.train, then sample, eval and export
sample  -> <workdir>/samples/: samples.npz and a picture (scatter or grid+GIF)
eval    -> per checkpoint: toy exact metrics and figures, or images' IS/FID/KID; held-out DSM loss
stats   -> FID reference statistics (mean, covariance) of a dataset split
inpaint -> <workdir>/inpainting/: originals, masked inputs and completions
export  -> <export_dir>/<version>/ SavedModel
experiment -> the score-matching lab's figures and tables (ncsn_tf/experiments.py)
likelihood -> exact NLL (toys) or bits/dim (images) by the probability-flow ODE, to metrics.json
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import export as export_lib
from ncsn_tf import metrics_file
from ncsn_tf import plots
from ncsn_tf import train_lib
from ncsn_tf import data as data_lib
from ncsn_tf.progress import Progress
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import inpainting


def draw_samples(config: config_lib.Config, score_model, sigmas, *, num: int, seed: int,
                 show_progress: bool = True, return_nfe: bool = False):
  """Samples from the learned score with --sampler, in batches of --sample_batch_size.

  score_model: a ScoreModel, or a ladder network s(x, sigma_index) (wrapped
  with `sigmas`). Batch k starts from seed [seed, k] and runs its chain on
  [seed, 1000 + k].

  Returns (samples [num, *shape], trajectory [K, num, *shape]): annealed
  Langevin keeps --num_snapshots states; the SDE samplers keep only the last
  (K = 1). With return_nfe, also the score evaluations per sample.
  """
  shape = data_lib.data_shape(config.data)
  s = config.sampling
  # The same wrapper object for the same network: tf.function keys its trace
  # cache on the callable, so a fresh wrapper would retrace (and re-optimise)
  # the whole sampler graph at every snapshot and batch.
  sampler = configured.ConfiguredSampler(config, configured.as_score_model(score_model, sigmas),
                                         shape)
  outputs, trajectories = [], []
  progress = Progress('sample', num) if show_progress else None
  done, nfe = 0, 0
  for batch_index, start in enumerate(range(0, num, s.sample_batch_size)):
    size = min(s.sample_batch_size, num - start)
    samples, trajectory, nfe = sampler.sample(size, tf.constant([seed, batch_index], tf.int32),
                                              num_snapshots=s.num_snapshots)
    outputs.append(samples.numpy())
    trajectories.append(samples.numpy()[None] if trajectory is None else trajectory.numpy())
    done += size
    if progress:
      progress.update(done)
  if progress:
    progress.close()
  result = np.concatenate(outputs), np.concatenate(trajectories, axis=1)
  return (*result, int(nfe)) if return_nfe else result


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
    samples, trajectory = draw_samples(config, state.score_model, state.sigmas, num=num,
                                       seed=config.seed + step, show_progress=False)
    samples, trajectory = (data_lib.to_unit_range(x, config.data) for x in (samples, trajectory))
    with writer.as_default(step=step):
      tf.summary.image('samples', plots.image_grid(samples)[None], step=step)
      tf.summary.image('langevin_chain', chain_strip(trajectory)[None], step=step)
    writer.flush()

  return hook


def run_sample(config: config_lib.Config, state=None) -> str:
  """Draws --num_samples samples with the (EMA) model; returns the output dir."""
  state = state or train_lib.restore_for_inference(config)
  samples, trajectory = draw_samples(config, state.score_model, state.sigmas,
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
    images = data_lib.to_unit_range(samples, config.data)
    plots.save_png(plots.image_grid(images[:64]), os.path.join(out_dir, 'samples.png'))
    frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
    plots.save_gif(frames, os.path.join(out_dir, 'chain.gif'))
    if config.data.dataset == 'shapes':
      write_shape_fit(images, config.data.image_size, out_dir)
  logging.info('wrote %d samples to %s', len(samples), out_dir)
  return out_dir


def write_shape_fit(images, image_size: int, out_dir: str) -> dict:
  """Shapes only: how many sample objects are a clean disc, square or triangle.

  Compares the samples (float [N, S, S, 3] in [0, 1]) with as many test images
  (at most 256) by ncsn_tf.metrics.shape_fit (also how much of the images the
  objects cover and how many backgrounds are light); writes
  <out_dir>/shape_fit.json and logs two lines. Returns the JSON's dict.
  """
  from ncsn_tf.data import shapes
  from ncsn_tf.metrics import shape_fit
  reference = shapes.shapes_split_images('test', image_size=image_size,
                                         num_images=min(len(images), 256)) / 255.0
  result = {'iou_threshold': shape_fit.IOU_THRESHOLD, 'samples': shape_fit.shape_fit(images),
            'test_images': shape_fit.shape_fit(reference)}
  ours, data = result['samples'], result['test_images']
  logging.info('shape fit: %.0f%% ± %.0f%% of %d sample objects are a disc, square or '
               'triangle (IoU >= %g; %d empty samples); %.0f%% of %d objects in as many '
               'test images', 100 * ours['fit_rate'], 100 * ours['fit_rate_stderr'],
               ours['objects'], shape_fit.IOU_THRESHOLD, ours['empty_images'],
               100 * data['fit_rate'], data['objects'])
  logging.info('shape fit: objects cover %.1f%% of the samples (%.1f%% of the test images); '
               '%.0f%% of the samples have a light background (%.0f%% of the test images)',
               100 * ours['foreground_fraction'], 100 * data['foreground_fraction'],
               100 * ours['light_backgrounds'], 100 * data['light_backgrounds'])
  for summary in (ours, data):  # No objects at all gives NaN; JSON gets null, not NaN.
    for key in ('fit_rate', 'fit_rate_stderr', 'median_iou', 'foreground_fraction',
                'light_backgrounds'):
      summary[key] = metrics_file.json_floats([summary[key]])[0]
  metrics_file.write_json(os.path.join(out_dir, 'shape_fit.json'), result)
  return result


def run_eval(config: config_lib.Config, state=None) -> dict:
  """Evaluates `state`, or the checkpoints chosen by --eval_checkpoints.

  Toys: exact metrics and figures; images: held-out DSM loss and, with a
  feature network (--inception_kind/--inception_path), IS, FID and KID of
  --eval_samples samples. Held-out loss per checkpoint for both. See
  ncsn_tf/evaluation.py; results in <workdir>/metrics.json and TensorBoard.
  """
  from ncsn_tf import evaluation
  return evaluation.evaluate_run(config, state)


def run_stats(config: config_lib.Config) -> str:
  """FID reference statistics of --reference_split -> --reference_stats (ncsn_tf/evaluation.py)."""
  from ncsn_tf import evaluation
  return evaluation.run_stats(config)


def run_inpaint(config: config_lib.Config, state=None) -> str:
  """Completes --num_inpaint_images test images under --inpaint_mask.

  Writes <workdir>/inpainting/inpainting.png: one row per image with the
  original, the masked input and --inpaint_completions completions, and
  inpainting.npz with the arrays.
  """
  state = state or train_lib.restore_for_inference(config)
  s = config.sampling
  make_dataset = data_lib.dataset_fn(config.replace(train={'batch_size': s.num_inpaint_images}),
                                     split='test', shuffle=False)
  originals = next(iter(make_dataset(None))).numpy()
  shape = originals.shape
  if s.inpaint_mask in inpainting.MASK_KINDS:
    mask = inpainting.make_mask(s.inpaint_mask, shape, seed=config.seed)
  else:
    mask = inpainting.mask_from_image(s.inpaint_mask, shape)
  repeated = np.repeat(originals, s.inpaint_completions, axis=0)
  repeated_mask = np.repeat(mask, s.inpaint_completions, axis=0)
  completions = inpainting.annealed_langevin_inpainting(
      state.score_model.score_index, repeated, repeated_mask, tf.constant(state.sigmas),
      n_steps_each=s.n_steps_each, step_lr=s.step_lr, seed=tf.constant([config.seed, 7])).numpy()
  completions = completions.reshape((shape[0], s.inpaint_completions) + shape[1:])
  masked = originals * mask + 0.5 * (1 - mask)  # Unknown pixels shown grey.
  rows = np.concatenate([originals[:, None], masked[:, None], completions], axis=1)
  out_dir = os.path.join(config.workdir, 'inpainting')
  os.makedirs(out_dir, exist_ok=True)
  plots.save_png(plots.image_grid(rows.reshape((-1,) + shape[1:]), nrow=rows.shape[1]),
                 os.path.join(out_dir, 'inpainting.png'))
  tmp = os.path.join(out_dir, 'inpainting.tmp.npz')
  np.savez_compressed(tmp, originals=originals, mask=mask, completions=completions)
  os.replace(tmp, os.path.join(out_dir, 'inpainting.npz'))
  logging.info('wrote %s', os.path.join(out_dir, 'inpainting.png'))
  return out_dir


def run_export(config: config_lib.Config, state=None) -> str:
  state = state or train_lib.restore_for_inference(config)
  return export_lib.export(state.score_model, config, state.sigmas)


def run_train(config: config_lib.Config) -> dict:
  """Trains (or resumes), then samples, evaluates and exports."""
  hook = None if config.data.is_toy else image_snapshot_hook(config)
  state = train_lib.train(config, on_snapshot=hook)
  if not state.chief:  # Multi-worker: only the chief samples, evaluates and exports.
    return {'metrics': {}, 'export': None}
  run_sample(config, state)
  metrics = run_eval(config, state)
  path = run_export(config, state)
  return {'metrics': metrics, 'export': path}


def run_likelihood(config: config_lib.Config, state=None) -> dict:
  """Exact log-likelihoods by the probability-flow ODE (ncsn_tf/likelihood_eval.py)."""
  from ncsn_tf import likelihood_eval
  return likelihood_eval.evaluate_likelihood(config, state)


def run_experiment(config: config_lib.Config) -> dict:
  """The score-matching lab on a toy (see ncsn_tf/experiments.py)."""
  from ncsn_tf import experiments
  return experiments.run_experiment(config)


MODES = {'train': run_train, 'sample': run_sample, 'eval': run_eval, 'export': run_export,
         'experiment': run_experiment, 'inpaint': run_inpaint, 'stats': run_stats,
         'likelihood': run_likelihood}
