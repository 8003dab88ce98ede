"""One function per `--mode`; `run.py` only parses flags and calls these.

train   -> train_lib.train, then sample, eval and export
sample  -> <workdir>/samples/: samples.npz and a picture (scatter or grid+GIF); --guidance: samples_guided/
eval    -> per checkpoint: toy exact metrics and figures, or images' IS/FID/KID; held-out DSM loss
stats   -> FID reference statistics (mean, covariance) of a dataset split
inpaint -> <workdir>/inpainting/: originals, masked inputs and completions (any --sampler)
colorize -> <workdir>/colorization/: originals, grey inputs, completions and their colour error
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
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import inpainting


def draw_samples(config: config_lib.Config, score_model, sigmas, *, num: int, seed: int,
                 show_progress: bool = True, return_nfe: bool = False, strategy=None,
                 cross_worker: bool = False, before_batch=None):
  """Samples from the learned score with --sampler, in batches of --sample_batch_size.

  score_model: a ScoreModel, or a ladder network s(x, sigma_index) (wrapped
  with `sigmas`). Batch k starts from seed [seed, k] and runs its chain on
  [seed, 1000 + k].

  strategy: the devices to sample on (sampling/distributed.py; None: one
  device): every score evaluation is split over its local replicas and, with
  cross_worker (every worker of a multi-worker strategy calls this), the
  batches over its workers. The samples are one device's up to float32
  round-off: the seeds above do not depend on the devices.

  before_batch: None, or fn(start, size) called before batch k (rows
  [start, start + size)) is drawn: guidance assigns that batch's labels.

  Returns (samples [num, *shape], trajectory [K, num, *shape]): annealed
  Langevin keeps --num_snapshots states; the SDE samplers keep only the last
  (K = 1). With return_nfe, also the score evaluations per sample (of the
  last batch: the ODE's count varies with the batch).
  """
  shape = data_lib.data_shape(config.data)
  s = config.sampling
  # The same wrapper object for the same network: tf.function keys its trace
  # cache on the callable, so a fresh wrapper would retrace (and re-optimise)
  # the whole sampler graph at every snapshot and batch. `shard` caches too.
  model = distributed.shard(configured.as_score_model(score_model, sigmas), strategy)
  sampler = configured.ConfiguredSampler(config, model, shape)
  sizes = [min(s.sample_batch_size, num - start) for start in range(0, num, s.sample_batch_size)]

  def draw(k):
    if before_batch is not None:
      before_batch(k * s.sample_batch_size, sizes[k])
    samples, trajectory, nfe = sampler.sample(sizes[k], tf.constant([seed, k], tf.int32),
                                              num_snapshots=s.num_snapshots)
    samples = samples.numpy()
    trajectory = samples[None] if trajectory is None else trajectory.numpy()
    # Rows first, as batches_in_order gathers them; the NFE once per row.
    return {'samples': samples, 'trajectory': np.moveaxis(trajectory, 1, 0),
            'nfe': np.full([sizes[k]], int(nfe), np.int32)}

  outputs, trajectories = [], []
  progress = Progress('sample', num) if show_progress else None
  done, nfe = 0, 0
  for _, batch in distributed.batches_in_order(strategy, sizes, draw, cross_worker=cross_worker):
    outputs.append(batch['samples'])
    trajectories.append(np.moveaxis(batch['trajectory'], 0, 1))
    nfe = int(batch['nfe'][0])
    done += len(batch['samples'])
    if progress:
      progress.update(done)
  if progress:
    progress.close()
  result = np.concatenate(outputs), np.concatenate(trajectories, axis=1)
  return (*result, nfe) if return_nfe else result


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
    samples, trajectory = draw_samples(config, state.score_model, state.sigmas, num=num,
                                       seed=config.seed + step, show_progress=False,
                                       strategy=distributed.sampling_strategy(config))
    samples, trajectory = (data_lib.to_unit_range(x, config.data) for x in (samples, trajectory))
    with writer.as_default(step=step):
      tf.summary.image('samples', plots.image_grid(samples)[None], step=step)
      tf.summary.image('langevin_chain', chain_strip(trajectory)[None], step=step)
    writer.flush()

  return hook


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
  state = state or train_lib.restore_for_inference(config, strategy)
  samples, trajectory = draw_samples(config, state.score_model, state.sigmas,
                                     num=config.sampling.num_samples, seed=config.seed,
                                     strategy=strategy, cross_worker=cross_worker)
  out_dir = os.path.join(config.workdir, 'samples')
  if not train_lib.is_chief(strategy):
    return out_dir
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
    if config.data.dataset == 'digits':
      write_digit_judgement(images, None, config, out_dir)
  logging.info('wrote %d samples to %s', len(samples), out_dir)
  return out_dir


#: Most samples per class shown in the per-class grid (one row per class).
GRID_COLUMNS = 16
#: Where --guidance samples go, beside the unconditional ones in samples/.
GUIDED_SAMPLES_DIR = 'samples_guided'


def write_digit_judgement(images, labels, config: config_lib.Config, out_dir: str) -> dict:
  """Digits only: the clean classifier's verdict on samples (ncsn_tf/metrics/digit_judge.py).

  images: float [N, S, S, 1] in [0, 1]; labels: the requested classes int [N],
  or None for unconditional samples. Writes <out_dir>/digit_judgement.json.
  """
  from ncsn_tf.metrics import digit_judge
  return digit_judge.write_judgement(images, labels, config.data.image_size, out_dir,
                                     seed=config.seed)


def run_guided_sample(config: config_lib.Config, state=None) -> str:
  """--guidance: samples of --class_label, or of every class for -1, to <workdir>/samples_guided/.

  samples.npz holds `samples`, `labels` (int32) and `trajectory`;
  samples.png is a grid with one row per class (--class_label=-1: ceil(N/C)
  samples of each class, at most GRID_COLUMNS shown per row) or of the
  first 64 samples of the one class; chain.gif the chain as for run_sample.
  """
  from ncsn_tf.sampling import guidance
  s = config.sampling
  # The classifier first: its restore fails fast, before the score model's.
  classifier = guidance.load_classifier(config) if s.guidance == 'classifier' else None
  state = state or train_lib.restore_for_inference(config)
  num_classes = data_lib.num_classes(config.data)
  labels = guidance.class_labels(s.class_label, num_classes, s.num_samples)
  samples, trajectory = guidance.draw_guided_samples(config, state.score_model, labels,
                                                     seed=config.seed, classifier=classifier)
  out_dir = os.path.join(config.workdir, GUIDED_SAMPLES_DIR)
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, 'samples.tmp.npz')
  np.savez_compressed(tmp, samples=samples, labels=labels, trajectory=trajectory)
  os.replace(tmp, os.path.join(out_dir, 'samples.npz'))
  images = data_lib.to_unit_range(samples, config.data)
  if s.class_label < 0:
    rows = images.reshape((num_classes, -1) + images.shape[1:])[:, :GRID_COLUMNS]
    grid = plots.image_grid(rows.reshape((-1,) + images.shape[1:]), nrow=rows.shape[1])
  else:
    grid = plots.image_grid(images[:64])
  plots.save_png(grid, os.path.join(out_dir, 'samples.png'))
  frames = [plots.image_grid(data_lib.to_unit_range(t[:64], config.data)) for t in trajectory]
  plots.save_gif(frames, os.path.join(out_dir, 'chain.gif'))
  if config.data.dataset == 'digits':
    write_digit_judgement(images, labels, config, out_dir)
  logging.info('wrote %d samples of %s (--guidance=%s, w=%g) to %s', len(samples),
               'every class' if s.class_label < 0 else f'class {s.class_label}', s.guidance,
               s.guidance_scale, out_dir)
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
  state = state or train_lib.restore_for_inference(config)
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


def _rmse(a, b) -> float:
  return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b)**2)))


def _rmse_between(completions) -> float | None:
  """RMSE between two completions of one image, over all pairs; None for one completion.

  For a sampler of the true conditional the original is one more draw from it, so
  this equals the completions' RMSE against the originals (a calibration check).
  """
  k = completions.shape[1]
  if k < 2:
    return None
  pairs = [np.mean((completions[:, i] - completions[:, j]).astype(np.float64)**2)
           for i in range(k) for j in range(i + 1, k)]
  return float(np.sqrt(np.mean(pairs)))


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
  state = state or train_lib.restore_for_inference(config)
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
      'rmse_completions': _rmse(colour, originals[:, None]),
      'rmse_mean_of_completions': _rmse(colour.mean(axis=1), originals),
      'rmse_grey_baseline': _rmse(baseline, originals),
      'rmse_between_completions': _rmse_between(colour),
      'rmse_completions_per_image': [_rmse(c, o) for c, o in zip(colour, originals[:, None])],
      'rmse_grey_baseline_per_image': [_rmse(b, o) for b, o in zip(baseline, originals)]}
  out_dir = os.path.join(config.workdir, 'colorization')
  os.makedirs(out_dir, exist_ok=True)
  rows = np.concatenate([originals[:, None], baseline[:, None], colour], axis=1)
  plots.save_png(plots.image_grid(rows.reshape((-1,) + shape[1:]), nrow=rows.shape[1]),
                 os.path.join(out_dir, 'colorization.png'))
  tmp = os.path.join(out_dir, 'colorization.tmp.npz')
  np.savez_compressed(tmp, originals=originals, grey=grey, completions=completions)
  os.replace(tmp, os.path.join(out_dir, 'colorization.npz'))
  metrics_file.write_json(os.path.join(out_dir, 'colorization.json'), result)
  logging.info('colourisation (%s, %d score evaluations each): RMSE %.4f of %d completions '
               'against the originals (their mean per image: %.4f; between two completions: '
               '%s); grey-to-colour baseline %.4f; wrote %s', result['sampler'], nfe,
               result['rmse_completions'], colour.shape[0] * colour.shape[1],
               result['rmse_mean_of_completions'], result['rmse_between_completions'],
               result['rmse_grey_baseline'], out_dir)
  return result


def run_export(config: config_lib.Config, state=None) -> str:
  state = state or train_lib.restore_for_inference(config)
  classifier = None
  if config.sampling.guidance == 'classifier':  # `sample_class` by classifier guidance.
    from ncsn_tf.sampling import guidance
    classifier = guidance.load_classifier(config)
  return export_lib.export(state.score_model, config, state.sigmas, classifier=classifier)


def run_train(config: config_lib.Config) -> dict:
  """Trains (or resumes), then samples, evaluates and exports.

  --task=classifier trains the guidance classifier only: it has no samples
  or export of its own (--guidance=classifier reads it from its workdir).
  """
  if config.train.task == 'classifier':
    train_lib.train(config)
    return {'metrics': {}, 'export': None}
  hook = None if config.data.is_toy else image_snapshot_hook(config)
  state = train_lib.train(config, on_snapshot=hook)
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
  from ncsn_tf import likelihood_eval
  return likelihood_eval.evaluate_likelihood(config, state)


def run_experiment(config: config_lib.Config) -> dict:
  """The score-matching lab on a toy (see ncsn_tf/experiments.py)."""
  from ncsn_tf import experiments
  return experiments.run_experiment(config)


MODES = {'train': run_train, 'sample': run_sample, 'eval': run_eval, 'export': run_export,
         'experiment': run_experiment, 'inpaint': run_inpaint, 'colorize': run_colorize,
         'stats': run_stats,
         'likelihood': run_likelihood}
