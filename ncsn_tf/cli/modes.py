"""TODO docstring (from ncsn_tf.modes)."""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.data import toy
from ncsn_tf.evaluation import conditional
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.evaluation import judges
from ncsn_tf.evaluation import likelihood as likelihood_eval
from ncsn_tf.evaluation import samples as sample_outputs
from ncsn_tf.lab import experiments
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import draw
from ncsn_tf.sampling import guidance
from ncsn_tf.sampling import inpainting
from ncsn_tf.serving import export as export_lib
from ncsn_tf.training import loop as train_loop


def run_sample(config: config_lib.Config, state=None) -> str:
  """Draws --num_samples samples with the (EMA) model; returns the output dir.

  On the run's devices (sampling/distributed.py): without `state` (--mode=sample)
  the weights are restored into the run's strategy and, under multi_worker,
  every worker draws its share of the batches and the chief alone writes; with
  `state` (after training: the chief alone) on this machine's replicas.
  """
  if config.sampling.guidance != 'none':  # Class-conditional (ncsn_tf/sampling/guidance.py).
    return run_guided_sample(config, state)
  strategy = distributed.sampling_strategy(config)
  cross_worker = state is None
  state = state or checkpoints.restore_for_inference(config, strategy)
  samples, trajectory = draw.draw_samples(config, state.score_model, state.sigmas,
                                     num=config.sampling.num_samples, seed=config.seed,
                                     strategy=strategy, cross_worker=cross_worker)
  out_dir = os.path.join(config.workdir, 'samples')
  if not devices.is_chief(strategy):
    return out_dir
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, 'samples.tmp.npz')
  np.savez_compressed(tmp, samples=samples, trajectory=trajectory)
  os.replace(tmp, os.path.join(out_dir, 'samples.npz'))
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
    if config.data.dataset == 'shapes':
      judges.write_shape_fit(images, config.data.image_size, out_dir)
    if config.data.dataset == 'digits':
      judges.write_digit_judgement(images, None, config, out_dir)
  logging.info('wrote %d samples to %s', len(samples), out_dir)
  return out_dir


def run_guided_sample(config: config_lib.Config, state=None) -> str:
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
  out_dir = os.path.join(config.workdir, sample_outputs.GUIDED_SAMPLES_DIR)
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, 'samples.tmp.npz')
  np.savez_compressed(tmp, samples=samples, labels=labels, trajectory=trajectory)
  os.replace(tmp, os.path.join(out_dir, 'samples.npz'))
  images = data_lib.to_unit_range(samples, config.data)
  if s.class_label < 0:
    rows = images.reshape((num_classes, -1) + images.shape[1:])[:, :sample_outputs.GRID_COLUMNS]
    grid = plots.image_grid(rows.reshape((-1,) + images.shape[1:]), nrow=rows.shape[1])
  else:
    grid = plots.image_grid(images[:64])
  plots.save_png(grid, os.path.join(out_dir, 'samples.png'))
  frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
  plots.save_gif(frames, os.path.join(out_dir, 'chain.gif'))
  if config.data.dataset == 'digits':
    judges.write_digit_judgement(images, labels, config, out_dir)
  logging.info('wrote %d samples of %s (--guidance=%s, w=%g) to %s', len(samples),
               'every class' if s.class_label < 0 else f'class {s.class_label}', s.guidance,
               s.guidance_scale, out_dir)
  return out_dir


def run_eval(config: config_lib.Config, state=None) -> dict:
  """Evaluates `state`, or the checkpoints chosen by --eval_checkpoints.

  Toys: exact metrics and figures; images: held-out DSM loss and, with a
  feature network (--inception_kind/--inception_path), IS, FID and KID of
  --eval_samples samples. Held-out loss per checkpoint for both. See
  ncsn_tf/evaluation.py; results in <workdir>/metrics.json and TensorBoard.
  """
  return image_eval.evaluate_run(config, state)


def run_stats(config: config_lib.Config) -> str:
  """FID reference statistics of --reference_split -> --reference_stats (ncsn_tf/evaluation.py)."""
  return image_eval.run_stats(config)


def _test_images(config: config_lib.Config, num: int) -> np.ndarray:
  """The first `num` images of the test split, in the data's range: float32 [num, H, W, C]."""
  make_dataset = data_lib.dataset_fn(config.replace(train={'batch_size': num}), split='test',
                                     shuffle=False)
  return next(iter(make_dataset(None))).numpy()


def _draw_under(config: config_lib.Config, state, condition) -> tuple[np.ndarray, int]:
  """Samples with --sampler under `condition` (sampling/conditions.py), one per row of its
  `known`, from seed [seed, 7]: (samples [M, H, W, C], score evaluations per sample)."""
  sampler = configured.ConfiguredSampler(config, state.score_model,
                                         data_lib.data_shape(config.data))
  samples, _, nfe = sampler.sample(int(condition.known.shape[0]),
                                   tf.constant([config.seed, 7], tf.int32), condition=condition)
  return samples.numpy(), int(nfe)


def run_inpaint(config: config_lib.Config, state=None) -> str:
  """Completes --num_inpaint_images test images under --inpaint_mask, with --sampler.

  Every sampler accepts the inpainting condition (sampling/conditions.py, docs/controllable.md).
  Writes <workdir>/inpainting/inpainting.png: one row per image with the
  original, the masked input and --inpaint_completions completions, and
  inpainting.npz with the arrays.
  """
  state = state or checkpoints.restore_for_inference(config)
  s = config.sampling
  originals = _test_images(config, s.num_inpaint_images)
  shape = originals.shape
  if s.inpaint_mask in inpainting.MASK_KINDS:
    mask = inpainting.make_mask(s.inpaint_mask, shape, seed=config.seed)
  else:
    mask = inpainting.mask_from_image(s.inpaint_mask, shape)
  repeated = np.repeat(originals, s.inpaint_completions, axis=0)
  repeated_mask = np.repeat(mask, s.inpaint_completions, axis=0)
  completions, nfe = _draw_under(config, state, conditions.inpainting(repeated, repeated_mask))
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
  logging.info('wrote %s (%s, %d score evaluations per completion)',
               os.path.join(out_dir, 'inpainting.png'), configured.describe(s), nfe)
  return out_dir


def run_colorize(config: config_lib.Config, state=None) -> dict:
  """Colourises --num_inpaint_images test images from their grey axis, with --sampler.

  The grey coordinate (r + g + b)/√3 of every pixel is known and the two
  chroma coordinates are sampled (sampling/conditions.py, docs/controllable.md).
  Writes <workdir>/colorization/: colorization.png (per row the original, the
  grey input and --inpaint_completions completions), colorization.npz
  (originals, grey [N, H, W, 1], completions [N, K, H, W, 3] as sampled) and
  colorization.json: the colour error, RMSE over pixels and channels in [0, 1]
  units, of the completions (clipped to [0, 1]) and of their mean per image
  against the originals, beside the grey-to-colour baseline's (the grey
  image in all three channels), and the RMSE between two completions of one
  image (a sampler of the true conditional has it equal to the completions'
  error: the original is one more draw). Returns the JSON's dict.
  """
  state = state or checkpoints.restore_for_inference(config)
  s = config.sampling
  originals = _test_images(config, s.num_inpaint_images)
  shape = originals.shape
  grey = conditions.grey_of(originals).numpy()
  condition = conditions.colorization(np.repeat(grey, s.inpaint_completions, axis=0))
  completions, nfe = _draw_under(config, state, condition)
  completions = completions.reshape((shape[0], s.inpaint_completions) + shape[1:])
  colour = np.clip(completions, 0.0, 1.0)
  baseline = np.repeat(grey, shape[-1], axis=-1)
  result = {
      'images': shape[0], 'completions_per_image': s.inpaint_completions,
      'sampler': configured.describe(s), 'nfe_per_completion': nfe,
      'rmse_completions': conditional._rmse(colour, originals[:, None]),
      'rmse_mean_of_completions': conditional._rmse(colour.mean(axis=1), originals),
      'rmse_grey_baseline': conditional._rmse(baseline, originals),
      'rmse_between_completions': conditional._rmse_between(colour),
      'rmse_completions_per_image': [conditional._rmse(c, o) for c, o in zip(colour, originals[:, None])],
      'rmse_grey_baseline_per_image': [conditional._rmse(b, o) for b, o in zip(baseline, originals)]}
  out_dir = os.path.join(config.workdir, 'colorization')
  os.makedirs(out_dir, exist_ok=True)
  rows = np.concatenate([originals[:, None], baseline[:, None], colour], axis=1)
  plots.save_png(plots.image_grid(rows.reshape((-1,) + shape[1:]), nrow=rows.shape[1]),
                 os.path.join(out_dir, 'colorization.png'))
  tmp = os.path.join(out_dir, 'colorization.tmp.npz')
  np.savez_compressed(tmp, originals=originals, grey=grey, completions=completions)
  os.replace(tmp, os.path.join(out_dir, 'colorization.npz'))
  artifacts.write_json(os.path.join(out_dir, 'colorization.json'), result)
  logging.info('colourisation (%s, %d score evaluations each): RMSE %.4f of %d completions '
               'against the originals (their mean per image: %.4f; between two completions: '
               '%s); grey-to-colour baseline %.4f; wrote %s', result['sampler'], nfe,
               result['rmse_completions'], colour.shape[0] * colour.shape[1],
               result['rmse_mean_of_completions'], result['rmse_between_completions'],
               result['rmse_grey_baseline'], out_dir)
  return result


def run_export(config: config_lib.Config, state=None) -> str:
  state = state or checkpoints.restore_for_inference(config)
  classifier = None
  if config.sampling.guidance == 'classifier':  # `sample_class` by classifier guidance.
    classifier = guidance.load_classifier(config)
  return export_lib.export(state.score_model, config, state.sigmas, classifier=classifier)


def run_train(config: config_lib.Config) -> dict:
  """Trains (or resumes), then samples, evaluates and exports.

  --task=classifier trains the guidance classifier only: it has no samples
  or export of its own (--guidance=classifier reads it from its workdir).
  """
  if config.train.task == 'classifier':
    train_loop.train(config)
    return {'metrics': {}, 'export': None}
  hook = None if config.data.is_toy else sample_outputs.image_snapshot_hook(config)
  state = train_loop.train(config, on_snapshot=hook)
  if not state.chief:  # Multi-worker: only the chief samples, evaluates and exports.
    return {'metrics': {}, 'export': None}
  if config.sampling.guidance != 'none':
    # Both: unconditional samples in samples/, class-conditional in samples_guided/.
    run_sample(config.replace(sampling={'guidance': 'none'}), state)
  run_sample(config, state)
  metrics = run_eval(config, state)
  path = run_export(config, state)
  return {'metrics': metrics, 'export': path}


def run_likelihood(config: config_lib.Config, state=None) -> dict:
  """Exact log-likelihoods by the probability-flow ODE (ncsn_tf/likelihood_eval.py)."""
  return likelihood_eval.evaluate_likelihood(config, state)


def run_experiment(config: config_lib.Config) -> dict:
  """The score-matching lab on a toy (see ncsn_tf/experiments.py)."""
  return experiments.run_experiment(config)


MODES = {'train': run_train, 'sample': run_sample, 'eval': run_eval, 'export': run_export,
         'experiment': run_experiment, 'inpaint': run_inpaint, 'colorize': run_colorize,
         'stats': run_stats,
         'likelihood': run_likelihood}
