"""`--mode=eval` and `--mode=stats`: sample-based image metrics and checkpoint sweeps.

For every selected checkpoint (`--eval_checkpoints=latest|all|STEP,...`):

  annealed Langevin, `--eval_batch_size` images at a time (never all in memory)
    -> clip to [0, 1] (after the inverse logit transform for logit-space runs)
    -> Inception features and logits (`--inception_kind`, `--inception_path`)
    -> RunningStatistics (FID), all logits (IS), the first KID_MAX_FEATURES features (KID)
  + the held-out annealed DSM loss of the same weights,

written to <workdir>/metrics.json (one entry per step under 'checkpoints', the
latest evaluated step also at the top level) and TensorBoard (`eval/...`).
Toy runs keep their exact metrics (`toy_eval.evaluate_toy`) in the same sweep.

Reference statistics (mean, covariance of the features of real data) come from
`--reference_stats` (any TTUR .npz works) or are computed from
`--reference_split` of the dataset at the model's resolution, without
dequantisation noise or flips, and cached under <workdir>/reference_stats/.
`--mode=stats` computes them explicitly. The published numbers (NCSN: IS 8.87,
FID 25.32 on CIFAR-10) use 50,000 samples, the 2015 FID Inception graph and
statistics of the full training set; see docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import images as image_data
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.evaluation import toy as toy_eval
from ncsn_tf.metrics import image as image_metrics
from ncsn_tf.metrics import inception
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.runtime.progress import Progress
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import draw as draw_lib
from ncsn_tf.sampling import samplers
from ncsn_tf.training import heldout as heldout_lib

#: Splits of the Inception Score, as in every published number.
IS_SPLITS = 10
#: KID: subsets and subset size of Binkowski et al.'s reference code.
KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000
#: Features kept per side for KID (10k x 2048 float32 = 80 MB); FID and IS use all.
KID_MAX_FEATURES = 10_000
#: Samples shown in the TensorBoard grid of each evaluated checkpoint.
GRID_SAMPLES = 64
#: Key of the KID reference features stored beside mu/sigma in computed statistics.
FEATURES_KEY = 'features'


# --- feature extractor and reference statistics ---------------------------------

def build_extractor(ev: config_lib.EvalConfig):
  """The FeatureExtractor named by --inception_kind / --inception_path (nothing downloaded).

  A file that does not decode as what --inception_kind needs is a ConfigError naming it.
  """
  try:
    if ev.inception_kind == 'fid_graph':
      return inception.FIDInceptionGraph(ev.inception_path)
    if ev.inception_kind == 'keras':
      return inception.KerasInceptionV3(ev.inception_path)
  except inception.InceptionWeightsNotFoundError:
    raise
  except (ValueError, OSError) as e:
    raise config_lib.ConfigError(f'--inception_path: {str(e).splitlines()[0]}') from None
  return inception.tiny_random_inception()


def extractor_info(config: config_lib.Config, extractor) -> dict:
  return {'name': extractor.name, 'kind': config.eval.inception_kind,
          'path': config.eval.inception_path or None,
          'comparable_with_published': bool(extractor.comparable_with_published)}


def default_reference_path(config: config_lib.Config, extractor) -> str:
  """<workdir>/reference_stats/<dataset>_<split>_<size>px_<images>_<extractor>.npz."""
  ev = config.eval
  size = data_lib.data_shape(config.data)[0]
  count = ev.reference_images or 'all'
  slug = re.sub(r'[^A-Za-z0-9]+', '_', extractor.name).strip('_')
  name = f'{config.data.dataset}_{ev.reference_split}_{size}px_{count}_{slug}.npz'
  return os.path.join(config.workdir, 'reference_stats', name)


def dataset_images(config: config_lib.Config, split: str, limit: int = 0):
  """Yields float32 [B, H, W, C] batches of real images in [0, 1], at most `limit` (0: all).

  No dequantisation noise, flips or logit transform: the 8-bit images at the
  model's resolution, as TTUR computes statistics. Batches are
  --eval_batch_size images; the split's last partial batch is dropped.
  """
  d, ev = config.data, config.eval
  batch_size = min(ev.batch_size, limit) if limit else ev.batch_size
  dataset = image_data.image_dataset(
      d.dataset, split=split, image_size=d.image_size, batch_size=batch_size,
      data_dir=d.data_dir, data_path=d.data_path, random_flip=False, dequantize=False,
      logit_transform=False, shuffle=False, repeat=False, seed=config.seed)
  done = 0
  for batch in dataset:
    batch = batch.numpy()
    if limit:
      batch = batch[:limit - done]
    done += len(batch)
    yield batch
    if limit and done >= limit:
      return


@dataclasses.dataclass
class _Accumulator:
  """Streams feature batches: running mean/covariance, all logits, the first KID features."""
  statistics: image_metrics.RunningStatistics = dataclasses.field(
      default_factory=image_metrics.RunningStatistics)
  logits: list = dataclasses.field(default_factory=list)
  features: list = dataclasses.field(default_factory=list)
  kept: int = 0

  def add(self, features, logits):
    self.statistics.update(features)
    self.logits.append(logits)
    if self.kept < KID_MAX_FEATURES:
      self.features.append(features[:KID_MAX_FEATURES - self.kept])
      self.kept += len(self.features[-1])

  def kid_features(self):
    return np.concatenate(self.features) if self.features else np.zeros([0, 0], np.float32)


def compute_reference_statistics(config: config_lib.Config, extractor, path: str) -> str:
  """Features of --reference_split -> `path` (.npz: mu, sigma, KID features, provenance)."""
  ev = config.eval
  acc = _Accumulator()
  # The size of a split is known only once read: a progress bar needs --reference_images.
  progress = Progress('reference statistics', ev.reference_images) if ev.reference_images else None
  for batch in dataset_images(config, ev.reference_split, ev.reference_images):
    acc.add(*extractor(batch))
    if progress:
      progress.update(acc.statistics.count)
  if progress:
    progress.close()
  if acc.statistics.count < 2:
    raise ValueError(f'--reference_split={ev.reference_split} of {config.data.dataset} gave '
                     f'{acc.statistics.count} image(s); lower --eval_batch_size (the last '
                     'partial batch is dropped) or use a larger split')
  mu, sigma = acc.statistics.mean_cov()
  if not path.endswith('.npz'):
    path += '.npz'  # What numpy would write; the name is reported as written.
  with artifacts.atomic_path(path) as tmp:
    image_metrics.save_statistics(
        tmp, mu, sigma, **{FEATURES_KEY: acc.kid_features()}, extractor=extractor.name,
        dataset=config.data.dataset, split=ev.reference_split,
        image_size=data_lib.data_shape(config.data)[0], num_images=acc.statistics.count)
  logging.info('reference statistics of %d %s/%s images (%s features) -> %s',
               acc.statistics.count, config.data.dataset, ev.reference_split, extractor.name, path)
  return path


@dataclasses.dataclass
class Reference:
  mu: np.ndarray
  sigma: np.ndarray
  features: np.ndarray | None  # For KID; None for TTUR files (statistics only).
  info: dict


def load_reference(path: str, extractor) -> Reference:
  """Loads statistics and checks they were made with `extractor`'s features.

  Files without an 'extractor' entry (TTUR's precomputed statistics) are taken
  to be FID-Inception statistics and only accepted with that network.
  """
  mu, sigma = image_metrics.load_statistics(path)
  with np.load(path, allow_pickle=False) as data:
    meta = {k: data[k] for k in data.files if k not in ('mu', 'sigma')}
  source = str(meta['extractor']) if 'extractor' in meta else None
  expected = source or 'fid_inception_2015 (a TTUR statistics file: no extractor entry)'
  if (source or 'fid_inception_2015') != extractor.name:
    raise ValueError(f'{path} holds statistics of {expected} features but this evaluation uses '
                     f'{extractor.name}: FID across networks is meaningless; pass matching '
                     '--reference_stats or compute them with --mode=stats')
  features = meta.get(FEATURES_KEY)
  if features is not None and features.size == 0:
    features = None
  info = {'path': os.path.abspath(path), 'extractor': source,
          'num_images': int(meta['num_images']) if 'num_images' in meta else None,
          'dataset': str(meta['dataset']) if 'dataset' in meta else None,
          'split': str(meta['split']) if 'split' in meta else None,
          'image_size': int(meta['image_size']) if 'image_size' in meta else None,
          'num_kid_features': 0 if features is None else int(len(features))}
  return Reference(mu, sigma, features, info)


def reference_for(config: config_lib.Config, extractor) -> Reference:
  """--reference_stats if given (must exist), else the cached or freshly computed default."""
  if config.eval.reference_stats:
    path = config.eval.reference_stats
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f'--reference_stats file not found: {path}; use a TTUR statistics file '
          '(e.g. fid_stats_cifar10_train.npz) or compute it with --mode=stats '
          f'--reference_stats={path}')
    try:
      return load_reference(path, extractor)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as e:  # np.load's errors
      raise config_lib.ConfigError(
          f'--reference_stats: {path}: {str(e).splitlines()[0] or type(e).__name__}') from None
  path = default_reference_path(config, extractor)
  if not os.path.isfile(path):
    compute_reference_statistics(config, extractor, path)
  return load_reference(path, extractor)


def run_stats(config: config_lib.Config) -> str:
  """--mode=stats: computes reference statistics to --reference_stats (or the default path)."""
  extractor = build_extractor(config.eval)
  path = config.eval.reference_stats or default_reference_path(config, extractor)
  if not path.endswith('.npz'):
    path += '.npz'
  return compute_reference_statistics(config, extractor, path)


# --- samples -> metrics ----------------------------------------------------------

class ImageEvaluator:
  """Held-out loss and IS/FID/KID of the weights currently in `model`.

  Built once per sweep: the sampler and the held-out loss are traced once and
  re-run after each checkpoint is restored into the same variables.

  strategy, cross_worker: where the samples are drawn (sampling/distributed.py):
  every score evaluation split over the strategy's local replicas, and with
  cross_worker the batches over the workers of a multi-worker strategy
  (every worker then iterates `_sample_batches`). Batch k's seeds do not
  depend on the devices, so neither do the samples.
  """

  def __init__(self, config: config_lib.Config, model, sigmas, heldout, extractor=None,
               reference: Reference | None = None, *, strategy=None, cross_worker: bool = False):
    self.config, self.model, self.heldout = config, model, heldout
    self.sigmas = np.asarray(sigmas, np.float32)
    self.extractor, self.reference = extractor, reference
    self.strategy, self.cross_worker = strategy, cross_worker
    # One sampler over one score model for every batch and checkpoint: one
    # trace of the sampler (checkpoints are restored into the same variables).
    self._sampler = configured.ConfiguredSampler(config, model, data_lib.data_shape(config.data),
                                                 strategy=strategy, sigmas=self.sigmas)

  def _sample_batches(self, num: int, progress=None):
    """Yields the samples batch by batch; `progress` (a Progress over samples) moves with
    every step of the sampler."""
    ev = self.config.eval
    sizes = [min(ev.batch_size, num - start) for start in range(0, num, ev.batch_size)]

    def draw(k):
      # Full batches only (same shapes, no re-trace); the last one is cut.
      draw_lib.STEP_PROGRESS.target(progress, k * ev.batch_size, sizes[k])
      x, _, _ = self._sampler.sample(ev.batch_size, self.config.seed, index=k, stream='eval',
                                     callback=draw_lib.STEP_PROGRESS)
      return {'samples': x.numpy()[:sizes[k]]}

    try:
      for _, batch in distributed.batches_in_order(self.strategy, sizes, draw,
                                                   cross_worker=self.cross_worker):
        yield batch['samples']
    finally:
      draw_lib.STEP_PROGRESS.target(None)

  def sample_metrics(self) -> tuple[dict, np.ndarray]:
    """IS, FID and KID of --eval_samples samples; returns (metrics, first samples for a grid)."""
    num = self.config.eval.num_samples
    acc, grid, nonfinite = _Accumulator(), [], 0
    progress = Progress('eval samples', num)
    for raw in self._sample_batches(num, progress):
      bad = ~np.all(np.isfinite(raw.reshape(len(raw), -1)), axis=1)
      nonfinite += int(bad.sum())
      finite = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
      images = data_lib.to_unit_range(finite, self.config.data)
      if len(grid) < GRID_SAMPLES:
        grid.extend(images[:GRID_SAMPLES - len(grid)])
      acc.add(*self.extractor(images))
      progress.update(acc.statistics.count)
    progress.close()
    if nonfinite:
      logging.warning('%d of %d samples were not finite (diverged sampler); set to 0', nonfinite, num)
    mu, sigma = acc.statistics.mean_cov()
    if mu.shape != self.reference.mu.shape:
      raise ValueError(f'reference statistics {self.reference.info["path"]} have '
                       f'{self.reference.mu.shape[0]} features, {self.extractor.name} gives '
                       f'{mu.shape[0]}')
    logits = np.concatenate(acc.logits)
    splits = min(IS_SPLITS, len(logits))
    is_mean, is_std = image_metrics.inception_score_from_logits(logits, splits=splits)
    metrics = {
        'num_samples': int(acc.statistics.count),
        'nonfinite_samples': nonfinite,
        'inception_score': {'mean': is_mean, 'std': is_std, 'splits': splits},
        'fid': image_metrics.fid_from_statistics(mu, sigma, self.reference.mu, self.reference.sigma),
        'kid': self._kid(acc.kid_features()),
    }
    return metrics, np.stack(grid)

  def _kid(self, features) -> dict:
    if self.reference.features is None:
      return {'mean': None, 'std': None, 'unavailable': (
          'the reference statistics file holds no features (TTUR format); '
          'compute statistics with --mode=stats for KID')}
    size = min(KID_SUBSET_SIZE, len(features), len(self.reference.features))
    mean, std = image_metrics.kid_from_activations(
        features, self.reference.features, num_subsets=KID_NUM_SUBSETS, subset_size=size,
        seed=self.config.seed)
    return {'mean': mean, 'std': std, 'num_subsets': KID_NUM_SUBSETS, 'subset_size': size,
            'num_features': [int(len(features)), int(len(self.reference.features))]}

  def __call__(self, step: int, writer) -> dict:
    config = self.config
    mean, per_sigma = self.heldout()
    metrics = {'step': step, 'dataset': config.data.dataset, 'heldout_loss': float(mean),
               'heldout_loss_per_sigma': artifacts.json_floats(per_sigma),
               'sigmas': [float(v) for v in self.sigmas]}
    grid = None
    if self.extractor is not None:
      sample_metrics, grid = self.sample_metrics()
      metrics.update(sample_metrics)
      metrics['feature_source'] = extractor_info(config, self.extractor)
      metrics['reference_stats'] = self.reference.info
      s = config.sampling
      metrics['sampler'] = {'name': s.sampler, **samplers.settings_from(s),
                            'batch_size': config.eval.batch_size, 'seed': config.seed}
    _write_image_summaries(writer, metrics, grid)
    logging.info('step %d: %s', step, _summary_line(metrics))
    return metrics


def _summary_line(m: dict) -> str:
  line = f'held-out loss {m["heldout_loss"]:.4f}'
  if 'fid' in m:
    kid = m['kid']['mean']
    line += (f'; {m["num_samples"]} samples, {m["feature_source"]["name"]} features, '
             f'statistics {m["reference_stats"]["path"]}: IS {m["inception_score"]["mean"]:.3f}'
             f' ± {m["inception_score"]["std"]:.3f}, FID {m["fid"]:.3f}, KID '
             + ('n/a' if kid is None else f'{kid:.5f}'))
    if not m['feature_source']['comparable_with_published']:
      line += ' (NOT comparable with published numbers: not the FID Inception graph)'
  return line


def _write_image_summaries(writer, m: dict, grid):
  step = m['step']
  with writer.as_default(step=step):
    tf.summary.scalar('eval/heldout_loss', m['heldout_loss'])
    if 'fid' in m:
      tf.summary.scalar('eval/fid', m['fid'])
      tf.summary.scalar('eval/inception_score', m['inception_score']['mean'])
      tf.summary.scalar('eval/inception_score_std', m['inception_score']['std'])
      if m['kid']['mean'] is not None:
        tf.summary.scalar('eval/kid', m['kid']['mean'])
        tf.summary.scalar('eval/kid_std', m['kid']['std'])
      settings = {k: m[k] for k in ('num_samples', 'feature_source', 'reference_stats', 'sampler')}
      tf.summary.text('eval/settings', json.dumps(settings, indent=2, sort_keys=True))
      tf.summary.image('eval/samples', plots.image_grid(grid)[None])
  writer.flush()


# --- the sweep -----------------------------------------------------------------------

def select_checkpoints(config: config_lib.Config) -> dict:
  """{step: path} chosen by --eval_checkpoints; FileNotFoundError if none/missing."""
  available = checkpoints.checkpoint_steps(config)
  if not available:
    raise FileNotFoundError(f'no checkpoint in {checkpoints.checkpoint_dir(config)}: train first '
                            f'(--mode=train with the same --workdir)')
  which = config.eval.checkpoints
  if which == 'all':
    return available
  if which == 'latest':
    step = max(available)
    return {step: available[step]}
  wanted = sorted({int(s) for s in which.split(',')})
  missing = [s for s in wanted if s not in available]
  if missing:
    raise FileNotFoundError(f'--eval_checkpoints: no checkpoint for step(s) {missing} in '
                            f'{checkpoints.checkpoint_dir(config)}; kept: {sorted(available)}')
  return {s: available[s] for s in wanted}


def _sample_metrics_enabled(config: config_lib.Config) -> bool:
  """IS/FID/KID run in --mode=eval, and after training only if a network is configured."""
  ev = config.eval
  if config.data.is_toy or ev.num_samples == 0:
    return False
  return config.mode != 'train' or ev.inception_kind == 'tiny_random' or bool(ev.inception_path)


def evaluate_run(config: config_lib.Config, state=None) -> dict:
  """Evaluates `state`, or the checkpoints chosen by --eval_checkpoints; writes metrics.json.

  Returns the metrics of the latest evaluated step, with 'checkpoints':
  {str(step): metrics} for every step in metrics.json (earlier entries kept).

  Samples are drawn on the run's devices (sampling/distributed.py). Without
  `state` (--mode=eval) the weights live in the run's strategy and, under
  multi_worker, every worker draws its share of the image samples while the
  chief alone measures and writes (the others return {}); with `state`
  (after training: the chief alone) on this machine's replicas.
  """
  strategy = devices.strategy_for(config)
  cross_worker = state is None
  if state is None:
    state = checkpoints.create_state(config, strategy)
    targets = select_checkpoints(config)
  else:
    targets = {int(state.step.numpy()): None}
  if not devices.is_chief(strategy):
    return _draw_worker_share(config, state, targets, strategy)
  heldout_eval = heldout_lib.make_heldout_eval(
      config.replace(train={'heldout_batches': max(config.train.heldout_batches, 1)}), state)
  # The EMA network (the network itself without EMA): TrainState makes the choice.
  # The toy figures and metrics ask it at ladder levels (a continuous-σ network
  # answers at the levels' σ); the samplers at any σ.
  score_model = state.score_model
  if config.data.is_toy:
    def evaluate(step):
      metrics = toy_eval.evaluate_toy(config, score_model, state.sigmas, step=step, writer=writer,
                                      strategy=strategy)
      mean, per_sigma = heldout_eval()
      metrics.update(heldout_loss=float(mean),
                     heldout_loss_per_sigma=artifacts.json_floats(per_sigma))
      with writer.as_default(step=step):
        tf.summary.scalar('eval/heldout_loss', mean)
      writer.flush()
      return metrics
  else:
    extractor = reference = None
    if _sample_metrics_enabled(config):
      extractor = build_extractor(config.eval)
      reference = reference_for(config, extractor)
    evaluator = ImageEvaluator(config, score_model, state.sigmas, heldout_eval, extractor, reference,
                               strategy=strategy, cross_worker=cross_worker)
    evaluate = lambda step: evaluator(step, writer)  # noqa: E731
  # After the feature network and reference statistics load: a refused run writes nothing.
  writer = tf.summary.create_file_writer(os.path.join(config.workdir, 'tensorboard'))
  results = {}
  for step, path in targets.items():
    if path is not None:
      step = checkpoints.restore_step(state, path)
    results[step] = evaluate(step)
  return write_metrics(config, results)


def _draw_worker_share(config: config_lib.Config, state, targets: dict, strategy) -> dict:
  """A non-chief worker of --mode=eval: its share of every checkpoint's image samples, for
  the chief's metrics (the same collective calls as the chief's sweep); writes nothing."""
  if _sample_metrics_enabled(config):
    evaluator = ImageEvaluator(config, state.score_model, state.sigmas, None, strategy=strategy,
                               cross_worker=True)
    for path in targets.values():
      if path is not None:
        checkpoints.restore_step(state, path)
      for _ in evaluator._sample_batches(config.eval.num_samples):
        pass
  return {}


def write_metrics(config: config_lib.Config, results: dict) -> dict:
  """Merges {step: metrics} into <workdir>/metrics.json (atomically); returns the payload."""
  previous = artifacts.read_metrics(config.workdir).get('checkpoints', {})
  per_step = {**previous, **{str(step): m for step, m in results.items()}}
  latest = results[max(results)]
  payload = {**latest, 'checkpoints': dict(sorted(per_step.items(), key=lambda kv: int(kv[0])))}
  artifacts.write_metrics(config.workdir, payload)
  return payload
