"""The one training loop, for every dataset and model.

* `tf.distribute`: MirroredStrategy over all visible GPUs; on CPU the default
  strategy, or MirroredStrategy over `num_cpu_replicas` logical CPU devices.
* The per-replica step (`_replica_step`) runs under `strategy.run` inside a
  `tf.function` that loops over many steps in the graph; the loss is averaged
  over the global batch; no host work between steps.
* One `tf.train.Checkpoint(step, model, ema_model, optimizer)` under a
  CheckpointManager in <workdir>/checkpoints: running the same command again
  resumes where it stopped; the data stream restarts at the saved step.
* TensorBoard scalars in <workdir>/tensorboard, written by the chief only.
* `--task=classifier` trains the noise-conditional classifier of classifier
  guidance through the same loop (`objective_for`), on labelled batches, and
  logs its held-out accuracy per σ.
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import data as data_lib
from ncsn_tf import losses
from ncsn_tf import lr_schedule
from ncsn_tf import models
from ncsn_tf import precision
from ncsn_tf import sigmas as sigmas_lib
from ncsn_tf.progress import Progress


class NonFiniteLossError(RuntimeError):
  """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT stopped training after a checkpoint at the current step."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class ConfigMismatchError(config_lib.ConfigError):
  """The workdir holds a run of a different model/data/training configuration."""


# --- devices and strategy ---------------------------------------------------

def configure_cpu_replicas(num_replicas: int):
  """Splits the first physical CPU into `num_replicas` logical devices.

  Must run before TensorFlow initialises its devices; a second call with the
  same count is a no-op, and an already-split CPU with enough devices is reused.
  """
  cpu = tf.config.list_physical_devices('CPU')[0]
  current = tf.config.get_logical_device_configuration(cpu)
  if current and len(current) >= num_replicas:
    return
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
  except RuntimeError as e:
    raise RuntimeError(f'--num_cpu_replicas={num_replicas} must be set before TensorFlow '
                       f'initialises its devices ({e})') from None


def make_strategy(num_cpu_replicas: int = 0, kind: str = 'auto') -> tf.distribute.Strategy:
  """The tf.distribute strategy of --strategy.

  auto: MirroredStrategy on all GPUs, or on N logical CPUs, else the default
  strategy; mirrored: MirroredStrategy on this machine's GPUs/CPU replicas even
  if only one; multi_worker: MultiWorkerMirroredStrategy over the cluster in
  TF_CONFIG (it must be created before any other TensorFlow op).
  """
  if kind == 'multi_worker':
    return _cached_strategy(('multi_worker',), tf.distribute.MultiWorkerMirroredStrategy)
  if num_cpu_replicas > 1:
    configure_cpu_replicas(num_cpu_replicas)
    cpus = tuple(d.name for d in tf.config.list_logical_devices('CPU')[:num_cpu_replicas])
    return _cached_strategy(cpus, lambda: tf.distribute.MirroredStrategy(list(cpus)))
  if tf.config.list_physical_devices('GPU') or kind == 'mirrored':
    return _cached_strategy(('mirrored',), tf.distribute.MirroredStrategy)
  return tf.distribute.get_strategy()


_STRATEGIES = {}


def _cached_strategy(key, create):
  """One strategy per device set and process.

  Two MirroredStrategy instances in one process number their collective
  all-reduces from the same start, and TensorFlow's collective executor then
  mixes up the second run's reductions with the first's ("Shape mismatch in the
  collective instance"): a second `train` in a notebook or test would fail.
  """
  if key not in _STRATEGIES:
    _STRATEGIES[key] = create()
  return _STRATEGIES[key]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this process is a non-chief worker of a multi-worker cluster."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in resolver.cluster_spec().as_dict())


def _local_replicas(strategy: tf.distribute.Strategy) -> int:
  """Replicas fed by this process's one input pipeline (batches it yields per step)."""
  try:
    return len(strategy.extended.worker_devices)
  except (RuntimeError, AttributeError, NotImplementedError):
    return 1


def device_summary(strategy: tf.distribute.Strategy, policy: str, requested: str = '') -> str:
  """'devices: 1 CPU, no GPU; strategy: default; precision: float32 (auto)'."""
  cpus = len(tf.config.list_physical_devices('CPU'))
  logical = len(tf.config.list_logical_devices('CPU'))
  devices = f'{cpus} CPU' + (f' ({logical} logical)' if logical > cpus else '')
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    names = [tf.config.experimental.get_device_details(g).get('device_name', 'GPU') for g in gpus]
    kinds = ', '.join(dict.fromkeys(names))
    devices += f', {len(gpus)} GPU{"s" if len(gpus) > 1 else ""} ({kinds})'
  else:
    devices += ', no GPU'
  kind = type(strategy).__name__
  if kind == '_DefaultDistributionStrategy':
    used = 'default'
  else:
    replicas = strategy.num_replicas_in_sync
    used = f'{kind}, {replicas} replica{"s" if replicas > 1 else ""}'
    if not is_chief(strategy):
      used += ' (non-chief worker: no outputs)'
  auto = ' (auto)' if requested == 'auto' else ''
  return f'devices: {devices}; strategy: {used}; precision: {policy}{auto}'


_LOGGED_DEVICES = set()


def log_devices(strategy: tf.distribute.Strategy, policy: str, requested: str = ''):
  """Logs `device_summary` once per process (again only if it changes)."""
  line = device_summary(strategy, policy, requested)
  if line not in _LOGGED_DEVICES:
    _LOGGED_DEVICES.add(line)
    logging.info('%s', line)


# --- state -------------------------------------------------------------------

@dataclasses.dataclass
class TrainState:
  """Everything a checkpoint holds, built inside the strategy's scope."""
  model: keras.Model
  ema_model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  sigmas: np.ndarray
  chief: bool = True  # False on non-chief workers: they write no outputs
  # Seconds the training loop has run, over all resumes (for --train_minutes).
  train_seconds: tf.Variable | None = None
  # The networks take σ (--noise_embedding=fourier) rather than a level index.
  continuous: bool = False

  @functools.cached_property
  def score_model(self):
    """The EMA network (the network itself without EMA) with its ladder, as a
    ScoreModel: what sampling, evaluation and export ask for scores. The
    EMA-or-not choice is made here, once (create_state aliases ema_model to
    model when --ema_rate=0)."""
    from ncsn_tf.models.score_model import ScoreModel
    return ScoreModel(self.ema_model, self.sigmas, continuous=self.continuous)

  def checkpoint(self, *, include_train_seconds: bool = True, **extra) -> tf.train.Checkpoint:
    """The checkpoint of this state; include_train_seconds=False reads checkpoints
    written before train_seconds existed."""
    if include_train_seconds and self.train_seconds is not None:
      extra['train_seconds'] = self.train_seconds
    # tf.train.Checkpoint does not see Keras 3 layers kept in Python lists
    # (RefineNet's blocks): without the explicit weight lists, the EMA model's
    # blocks were not saved at all (the model's only through the optimizer).
    return tf.train.Checkpoint(step=self.step, model=self.model, ema_model=self.ema_model,
                               optimizer=self.optimizer, model_weights=list(self.model.weights),
                               ema_weights=list(self.ema_model.weights), **extra)


def ladder(config: config_lib.Config) -> np.ndarray:
  m = config.model
  return sigmas_lib.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_scales)


def build_network(config: config_lib.Config, shape: tuple) -> keras.Model:
  """What --task trains: the score network, or the noise-conditional classifier."""
  if config.train.task == 'classifier':
    return models.build_classifier(config, shape, models.label_count(config))
  return models.build_model(config, shape)


def create_state(config: config_lib.Config, strategy: tf.distribute.Strategy) -> TrainState:
  """The networks (--task's: score network or classifier), their EMA copy, Adam and the step."""
  shape = data_lib.data_shape(config.data)
  # --precision=auto keeps a classifier in float32 (precision.resolve: only the
  # image score networks gain from bfloat16); its gradient steers guidance.
  name = 'classifier' if config.train.task == 'classifier' else config.model.name
  policy = precision.resolve(config.train.precision, name)
  log_devices(strategy, policy, config.train.precision)
  # Same seed, same initial weights: a run is reproducible from its config.
  keras.utils.set_random_seed(config.seed)
  with strategy.scope(), precision.policy_scope(policy):
    model = build_network(config, shape)
    if config.train.ema_rate > 0:
      ema_model = build_network(config, shape)
      ema_model.set_weights(model.get_weights())
    else:  # No EMA (NCSN v1): sampling, evaluation and export use the model itself.
      ema_model = model
    t = config.train
    lr = lr_schedule.learning_rate(t.learning_rate, t.lr_schedule, t.warmup_steps, t.train_steps)
    optimizer = precision.make_optimizer(policy, lr, t.beta1)
    # Keras 3 optimizers must create their slots inside the scope before the
    # first tf.function step, or MirroredStrategy fails on a placeholder.
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
  # Outside the scope: a host-side count that only the Python loop assigns.
  train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name='train_seconds')
  return TrainState(model, ema_model, optimizer, step, ladder(config),
                    train_seconds=train_seconds,
                    continuous=config.model.noise_embedding == 'fourier')


def _has_train_seconds(checkpoint_path: str) -> bool:
  return any(name.startswith('train_seconds/')
             for name, _ in tf.train.list_variables(checkpoint_path))


def checkpoint_dir(config: config_lib.Config) -> str:
  return os.path.join(config.workdir, 'checkpoints')


def restore_for_inference(config: config_lib.Config, strategy=None) -> TrainState:
  """A TrainState restored from the latest checkpoint (error if there is none)."""
  strategy = strategy or tf.distribute.get_strategy()
  check_resume_config(config)
  state = create_state(config, strategy)
  latest = tf.train.latest_checkpoint(checkpoint_dir(config))
  if latest is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(config)}: train first '
                            f'(--mode=train with the same --workdir)')
  state.checkpoint().restore(latest).expect_partial()
  logging.info('restored %s (step %d)', latest, int(state.step.numpy()))
  return state


def check_resume_config(config: config_lib.Config):
  """Refuses a workdir whose checkpoints belong to a different configuration.

  Compares <workdir>/config.json with `config` on every field that changes the
  model, the data or the optimisation (config_lib.RESUME_SAFE_FIELDS may
  differ); raises ConfigMismatchError naming the fields and how to start fresh.
  """
  path = os.path.join(config.workdir, 'config.json')
  if not os.path.exists(path) or tf.train.latest_checkpoint(checkpoint_dir(config)) is None:
    return
  with open(path) as f:
    saved = json.load(f)
  differences = config_lib.resume_mismatches(saved, config)
  if differences:
    raise ConfigMismatchError(
        f'--workdir: {config.workdir} holds checkpoints of a different configuration '
        f'({"; ".join(differences)}); to start fresh pass a new --workdir or delete '
        f'{config.workdir}, or rerun with the saved flags to resume')


def write_config_json(config: config_lib.Config):
  os.makedirs(config.workdir, exist_ok=True)
  path = os.path.join(config.workdir, 'config.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json())
  os.replace(tmp, path)


# --- the step ------------------------------------------------------------------

def loss_for(config: config_lib.Config, *, uniform_levels: bool = False):
  """The per-example loss of `config.train.loss` with its options bound.

  `uniform_levels` ignores --level_sampling: the held-out loss always draws
  levels uniformly, so its mean is comparable between runs that trained with
  different level distributions.
  """
  t = config.train
  level_logits = None
  if t.level_sampling == 'lognormal' and not uniform_levels:
    level_logits = losses.lognormal_level_logits(ladder(config), t.level_log_mean,
                                                 t.level_log_std)
  sde = None
  if t.loss == 'continuous_dsm':
    from ncsn_tf.sampling import configured
    sde = configured.build_sde(config.model)
  return losses.get_loss(
      t.loss, num_projections=t.num_projections, projection=t.projection,
      level_logits=level_logits, sde=sde,
      weighting='likelihood' if t.likelihood_weighting else 'sigma2',
      label_dropout=t.label_dropout if config.model.class_conditional else None,
      num_classes=models.label_count(config) if config.model.class_conditional else None,
      exact_score_fn=data_lib.toy.get_toy(config.data.dataset).score if config.data.is_toy else None)


def needs_labels(config: config_lib.Config) -> bool:
  """Whether training reads labels: a classifier, or a class-conditional score network."""
  return config.train.task == 'classifier' or config.model.class_conditional


def objective_for(config: config_lib.Config, network, *, training: bool,
                  uniform_levels: bool = False):
  """fn(batch, sigmas, seed) -> (loss [N], level_index int32 [N], correct float32 [N] or None).

  batch: the data [N, ...], or (data, labels int32 [N]) when `needs_labels`.
  --task=score: `loss_for`'s loss of `network` (with the labels for a
  class-conditional network, which the loss drops at --label_dropout);
  --task=classifier: the classifier's cross-entropy on perturbed data
  (losses.classifier_per_example, noise drawn as --sde's continuous DSM draws
  it; the ladder's VE range without an SDE) and whether it was right.
  """
  if config.train.task == 'classifier':
    from ncsn_tf.sampling import configured
    sde = configured.build_sde(config.model)

    def classify(batch, sigmas, seed):
      x, labels = batch
      return losses.classifier_per_example(lambda xx, ss: network(xx, ss, training=training),
                                           x, labels, sigmas, seed, sde=sde)
    return classify
  loss_fn = loss_for(config, uniform_levels=uniform_levels)
  if config.model.class_conditional:
    def conditional(batch, sigmas, seed):
      x, labels = batch
      loss, level = loss_fn(lambda xx, ss, yy: network(xx, ss, labels=yy, training=training),
                            x, sigmas, seed, labels=labels)
      return loss, level, None
    return conditional

  def score(x, sigmas, seed):
    return (*loss_fn(lambda xx, ii: network(xx, ii, training=training), x, sigmas, seed), None)
  return score


def make_train_chunk(config: config_lib.Config, strategy: tf.distribute.Strategy,
                     state: TrainState):
  """A tf.function (iterator, num_steps) -> stats that runs `num_steps` steps.

  stats: loss_sum, per_sigma_sum [L], per_sigma_count [L], examples, and the
  first non-finite step and σ level (-1 when all were finite).
  """
  num_scales = len(state.sigmas)
  sigmas = tf.constant(state.sigmas)
  global_batch = config.train.batch_size
  ema_rate = config.train.ema_rate
  model, ema_model, optimizer, step = state.model, state.ema_model, state.optimizer, state.step
  objective = objective_for(config, model, training=True)

  scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  skip_nonfinite = config.train.skip_nonfinite

  def loss_and_grads(x, seed):
    with tf.GradientTape() as tape:
      loss_vec, sigma_index, _ = objective(x, sigmas, seed)
      loss = tf.reduce_sum(loss_vec) / global_batch
      if scaled:  # float16: scale up so small gradients survive; apply unscales.
        loss = optimizer.scale_loss(loss)
    return loss_vec, sigma_index, tape.gradient(loss, model.trainable_variables)

  if config.train.jit_compile:
    # XLA compiles the forward and backward pass; the optimizer's cross-replica
    # update stays outside, where MirroredStrategy needs it.
    loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

  def replica_step(x):
    ctx = tf.distribute.get_replica_context()
    seed = tf.stack([tf.constant(config.seed, tf.int32),
                     tf.cast(step, tf.int32) * ctx.num_replicas_in_sync + ctx.replica_id_in_sync_group])
    loss_vec, sigma_index, grads = loss_and_grads(x, seed)
    nonfinite = tf.cast(tf.logical_not(tf.math.is_finite(loss_vec)), tf.float32)
    if skip_nonfinite:
      local_bad = tf.cast(tf.logical_or(tf.reduce_any(nonfinite > 0), tf.logical_not(
          tf.math.is_finite(tf.linalg.global_norm(grads)))), tf.float32)
      skipped = _apply_if_all_finite(ctx, optimizer, grads, model.trainable_variables, local_bad)
    else:
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      skipped = tf.constant(0.0)
    # Counts of non-finite examples per level: a SUM all-reduce of these works
    # for every strategy (ReduceOp has no MIN).
    bad_counts = tf.math.unsorted_segment_sum(nonfinite, sigma_index, num_scales)
    grads_finite = tf.math.is_finite(tf.linalg.global_norm(grads))
    counts = tf.math.unsorted_segment_sum(tf.ones_like(loss_vec), sigma_index, num_scales)
    # Non-finite examples would poison the loss sum: count them, add zeros.
    loss_vec = tf.where(nonfinite > 0, 0.0, loss_vec)
    sums = tf.math.unsorted_segment_sum(loss_vec, sigma_index, num_scales)
    return (tf.reduce_sum(loss_vec), sums, counts, bad_counts,
            tf.cast(tf.logical_not(grads_finite), tf.int32), skipped)

  def reduce(op, value):
    return strategy.reduce(op, value, axis=None)

  @tf.function
  def train_chunk(iterator, num_steps):
    loss_sum = tf.constant(0.0)
    per_sigma_sum = tf.zeros([num_scales])
    per_sigma_count = tf.zeros([num_scales])
    bad_step = tf.constant(-1, tf.int64)
    bad_level = tf.constant(-1)
    skipped_steps = tf.constant(0.0)
    for _ in tf.range(num_steps):
      out = strategy.run(replica_step, args=(next(iterator),))
      loss_sum += reduce(tf.distribute.ReduceOp.SUM, out[0])
      per_sigma_sum += reduce(tf.distribute.ReduceOp.SUM, out[1])
      per_sigma_count += reduce(tf.distribute.ReduceOp.SUM, out[2])
      bad_counts = reduce(tf.distribute.ReduceOp.SUM, out[3])
      grads_bad = reduce(tf.distribute.ReduceOp.SUM, out[4])
      # Every replica holds the same all-reduced decision.
      skipped = reduce(tf.distribute.ReduceOp.MEAN, out[5])
      skipped_steps += skipped
      if ema_rate > 0 and skipped == 0:
        # Warm-up as tf.train.ExponentialMovingAverage(num_updates=step): the
        # decay grows as (1 + t)/(10 + t) up to ema_rate, so early snapshots
        # are not dominated by the random initial weights.
        t = tf.cast(step, tf.float32)
        rate = tf.minimum(ema_rate, (1.0 + t) / (10.0 + t))
        for ema_var, var in zip(ema_model.weights, model.weights):
          ema_var.assign(rate * ema_var + (1.0 - rate) * var)
      step.assign_add(1)
      if not skip_nonfinite and (tf.reduce_any(bad_counts > 0) or grads_bad > 0):
        bad_step = step - 1
        # The largest σ (lowest index) with a non-finite term, or -1 if only
        # a gradient was non-finite.
        bad_level = tf.cond(tf.reduce_any(bad_counts > 0),
                            lambda: tf.cast(tf.argmax(tf.cast(bad_counts > 0, tf.int32)), tf.int32),
                            lambda: tf.constant(-1))
        break
    return {'loss_sum': loss_sum, 'per_sigma_sum': per_sigma_sum,
            'per_sigma_count': per_sigma_count, 'bad_step': bad_step, 'bad_level': bad_level,
            'skipped': skipped_steps}

  return train_chunk


def _apply_if_all_finite(ctx, optimizer, grads, variables, local_bad):
  """Applies `grads` only if no replica saw a non-finite term; returns 1.0 if skipped.

  The decision is all-reduced so every replica skips together. Strategies
  whose optimizer update uses merge_call (MirroredStrategy) cannot branch on
  it in replica context, so there the branch runs in cross-replica context,
  as keras.optimizers.LossScaleOptimizer does.
  """
  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    total_bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_bad)

    def apply():
      optimizer.apply_gradients(zip(grads, variables))
      return tf.constant(0.0)
    return tf.cond(total_bad > 0, lambda: tf.constant(1.0), apply)

  def merge_fn(distribution, grads, local_bad):
    total_bad = distribution.reduce(tf.distribute.ReduceOp.SUM, local_bad, axis=None)

    def apply():
      distribution.extended.call_for_each_replica(
          lambda g: optimizer.apply_gradients(zip(g, variables)), args=(grads,))
      return tf.constant(0.0)
    return tf.cond(total_bad > 0, lambda: tf.constant(1.0), apply)

  return ctx.merge_call(merge_fn, args=(grads, local_bad))


# --- held-out loss ----------------------------------------------------------------

def make_heldout_eval(config: config_lib.Config, state: TrainState):
  """A function () -> (mean loss, per-σ mean [L]) of the EMA model on held-out data.

  A level that no held-out example landed on is NaN in the per-σ mean.
  --task=classifier returns two more: the accuracy per σ level [L] (the
  share of its held-out examples classified right; NaN where empty) and the
  examples per level [L].
  The same `heldout_batches` batches and the same noise every call, so the
  curve over snapshots shows the model, not sampling noise. None when
  `heldout_batches` is 0.
  """
  if config.train.heldout_batches == 0:
    return None
  num_scales = len(state.sigmas)
  sigmas = tf.constant(state.sigmas)
  make_dataset = data_lib.dataset_fn(config, split='test', shuffle=False, seed_offset=0,
                                     with_labels=needs_labels(config))
  batches = list(make_dataset(None).take(config.train.heldout_batches))
  objective = objective_for(config, state.ema_model, training=False, uniform_levels=True)
  classifier = config.train.task == 'classifier'

  @tf.function
  def batch_terms(x, k):
    loss_vec, sigma_index, correct = objective(
        x, sigmas, tf.stack([tf.constant(config.seed + 1, tf.int32), k]))
    if correct is None:
      correct = tf.zeros_like(loss_vec)
    return (tf.math.unsorted_segment_sum(loss_vec, sigma_index, num_scales),
            tf.math.unsorted_segment_sum(tf.ones_like(loss_vec), sigma_index, num_scales),
            tf.math.unsorted_segment_sum(correct, sigma_index, num_scales))

  def evaluate():
    sums, counts, rights = np.zeros(num_scales), np.zeros(num_scales), np.zeros(num_scales)
    for k, x in enumerate(batches):
      s, c, r = batch_terms(x, tf.constant(k))
      sums += s.numpy()
      counts += c.numpy()
      rights += r.numpy()
    # A level that no held-out example landed on has no estimate: NaN, not 0
    # (with L = 100 levels and 64 held-out examples most levels are empty).
    per_sigma = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
    mean = sums.sum() / max(counts.sum(), 1.0)
    if classifier:
      return mean, per_sigma, np.where(counts > 0, rights / np.maximum(counts, 1.0), np.nan), counts
    return mean, per_sigma

  return evaluate


def _write_heldout(writer, step, heldout, sigmas):
  mean, per_sigma = heldout[:2]
  with writer.as_default(step=step):
    tf.summary.scalar('eval/heldout_loss', mean)
    for i, value in enumerate(per_sigma):
      if np.isfinite(value):  # Levels without held-out examples have no value.
        tf.summary.scalar(f'eval/heldout_loss_per_sigma/level_{i:02d}_sigma_{sigmas[i]:.3g}', value)
  if len(heldout) > 2:  # --task=classifier: accuracy per σ.
    _write_accuracy(writer, step, heldout[2], heldout[3], sigmas)


#: σ buckets of the classifier's held-out accuracy in the log (TensorBoard has every level).
ACCURACY_LOG_BUCKETS = 5


def accuracy_buckets(accuracy, counts, sigmas, num_buckets: int = ACCURACY_LOG_BUCKETS) -> list:
  """[(σ_high, σ_low, accuracy, examples)]: the levels cut into `num_buckets` runs of
  neighbouring σ (index 0 largest), each run's accuracy over its examples."""
  accuracy, counts = np.nan_to_num(np.asarray(accuracy, np.float64)), np.asarray(counts, np.float64)
  out = []
  for run in np.array_split(np.arange(len(sigmas)), min(num_buckets, len(sigmas))):
    n = counts[run].sum()
    out.append((float(sigmas[run[0]]), float(sigmas[run[-1]]),
                float((accuracy[run] * counts[run]).sum() / n) if n else float('nan'), int(n)))
  return out


def _write_accuracy(writer, step, accuracy, counts, sigmas):
  """The classifier's held-out accuracy: overall and per level to TensorBoard, per bucket to the log."""
  overall = float(np.nansum(accuracy * counts) / max(np.sum(counts), 1.0))
  with writer.as_default(step=step):
    tf.summary.scalar('eval/heldout_accuracy', overall)
    for i, value in enumerate(accuracy):
      if np.isfinite(value):
        tf.summary.scalar(f'eval/heldout_accuracy_per_sigma/level_{i:02d}_sigma_{sigmas[i]:.3g}',
                          value)
  logging.info('step %d: held-out accuracy %.3f; per σ: %s', step, overall, '; '.join(
      f'σ {hi:.3g}-{lo:.3g}: {acc:.2f}' for hi, lo, acc, n in
      accuracy_buckets(accuracy, counts, sigmas) if n))


# --- the loop ------------------------------------------------------------------

def _write_scalars(writer, step, stats, sigmas, lr, steps_per_sec, skip_nonfinite=False):
  count = stats['per_sigma_count']
  with writer.as_default(step=step):
    tf.summary.scalar('loss', stats['loss_sum'] / max(count.sum(), 1.0))
    for i, (s, c) in enumerate(zip(stats['per_sigma_sum'], count)):
      if c > 0:
        tf.summary.scalar(f'loss_per_sigma/level_{i:02d}_sigma_{sigmas[i]:.3g}', s / c)
    tf.summary.scalar('learning_rate', lr)
    tf.summary.scalar('steps_per_sec', steps_per_sec)
    if skip_nonfinite:
      tf.summary.scalar('nonfinite_skipped_steps', stats['skipped'])
  writer.flush()


def _accumulate(total, stats):
  """Sums two chunks' stats (loss sums, counts, skipped steps)."""
  if total is None:
    return dict(stats)
  return {k: (total[k] + stats[k] if k in ('loss_sum', 'per_sigma_sum', 'per_sigma_count', 'skipped')
              else stats[k]) for k in stats}


class _StopRequest:
  """A SIGTERM/SIGINT handler that asks the loop to save and stop at the next chunk."""

  def __init__(self):
    self.signum = None

  def __call__(self, signum, frame):
    del frame
    if self.signum is not None:  # A second signal: stop waiting for the save.
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signum = signum
    logging.warning('received %s: saving a checkpoint when the current chunk of steps ends, '
                    'then stopping (send it again to stop at once, unsaved)',
                    signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_on_signals():
  request = _StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request  # Signal handlers can only be set from the main thread.
    return
  previous = {sig: signal.signal(sig, request) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield request
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def _make_any_worker(strategy):
  """flag -> whether any worker's flag is set (a collective: every worker calls it)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return lambda flag: flag

  @tf.function
  def any_worker(flag):
    per_replica = strategy.run(lambda f: tf.identity(f), args=(flag,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

  return lambda flag: bool(any_worker(tf.constant(float(flag))).numpy())


def _worker_checkpoint_dir(config: config_lib.Config, strategy) -> str:
  """A non-chief worker's scratch checkpoint dir (saved into, then deleted)."""
  resolver = strategy.cluster_resolver
  return os.path.join(config.workdir, f'.tmp-{resolver.task_type}-{resolver.task_id}-checkpoints')


def _train_dataset(config: config_lib.Config, strategy, step: int):
  """The distributed training stream, positioned at `step`.

  Each input pipeline feeds its local replicas one batch each per step. Toy
  streams and the in-memory `shapes` images resume exactly where they
  stopped (a pure function of the step); tfds and folder streams restart
  with a fresh shuffle seeded by the step (replaying them would decode every
  skipped image).
  """
  consumed = step * _local_replicas(strategy)
  return strategy.distribute_datasets_from_function(  # (images, labels) when needs_labels
      data_lib.dataset_fn(config, start_batch=consumed, with_labels=needs_labels(config)))


def train(config: config_lib.Config, *, on_snapshot=None) -> TrainState:
  """Trains (or resumes) until `config.train.train_steps`; returns the state.

  With `config.train.train_minutes` > 0 training also ends at the first chunk
  boundary after the loop has run that long over all runs on the workdir (the
  seconds are checkpointed), with the final log, checkpoint and snapshot of a
  finished run. A cosine --lr_schedule still decays towards train_steps.

  on_snapshot: optional callable (state, writer) run after each checkpoint,
    e.g. to log image samples (chief only).
  Raises NonFiniteLossError (unless --skip_nonfinite), TrainingInterrupted
  after SIGTERM/SIGINT (a checkpoint at the current step was saved), and
  ConfigMismatchError when the workdir holds a different configuration.
  """
  if config.train.deterministic:
    # Before any op: bitwise-reproducible kernels and tf.data order.
    tf.config.experimental.enable_op_determinism()
  check_resume_config(config)
  strategy = make_strategy(config.train.num_cpu_replicas, config.train.strategy)
  chief = is_chief(strategy)
  if chief:
    write_config_json(config)
  state = create_state(config, strategy)
  state.chief = chief
  ckpt = state.checkpoint()
  # Every worker saves (saving may run collectives); only the chief's copy stays.
  save_dir = checkpoint_dir(config) if chief else _worker_checkpoint_dir(config, strategy)
  manager = tf.train.CheckpointManager(ckpt, save_dir, max_to_keep=config.train.max_checkpoints)
  latest = tf.train.latest_checkpoint(checkpoint_dir(config))
  if latest:
    # A checkpoint from before --train_minutes has no train_seconds: restore
    # the rest, and count its training time from zero.
    try:
      restoring = state.checkpoint(include_train_seconds=_has_train_seconds(latest))
      restoring.restore(latest).assert_existing_objects_matched()
    except AssertionError:
      # The checkpoint's variables do not fit this model (another version of
      # the code or of the model): say so in one line instead of listing them.
      raise config_lib.ConfigError(
          f'--workdir: the checkpoint {latest} does not match this model (written by '
          f'another version or configuration); use a new --workdir or delete '
          f'{checkpoint_dir(config)} to start fresh') from None
    logging.info('resumed from %s at step %d', latest, int(state.step.numpy()))
  # --train_minutes counts the loop's wall clock (steps, snapshots, samples)
  # over all runs on this workdir: the checkpoints carry the seconds so far.
  budget = 60.0 * config.train.train_minutes
  seconds_before, loop_start = float(state.train_seconds.numpy()), time.monotonic()
  seconds_so_far = lambda: seconds_before + time.monotonic() - loop_start

  def save(step):
    state.train_seconds.assign(seconds_so_far())
    path = manager.save(checkpoint_number=step)
    if not chief:
      shutil.rmtree(save_dir, ignore_errors=True)
      return latest_saved[0]
    latest_saved[0] = path
    return path

  latest_saved = [latest]
  iterator = iter(_train_dataset(config, strategy, int(state.step.numpy())))
  writer = (tf.summary.create_file_writer(os.path.join(config.workdir, 'tensorboard')) if chief
            else tf.summary.create_noop_writer())
  train_chunk = make_train_chunk(config, strategy, state)
  heldout_eval = make_heldout_eval(config, state) if chief else None
  any_worker = _make_any_worker(strategy)
  t = config.train
  total = t.train_steps
  step = int(state.step.numpy())
  progress = Progress('train', total, initial=step,
                      time_left=budget - seconds_so_far() if budget > 0 else None)
  saved_step = step if latest else None
  logged, logged_time, logged_steps, skipped_total = None, 0.0, 0, 0

  def out_of_time(seconds):
    # Every worker asks (a collective); any worker's clock past the budget stops all.
    return step < total and budget > 0 and any_worker(seconds >= budget)

  spent, start_step = out_of_time(seconds_before), step  # Spent by the earlier runs?
  if spent:
    logging.info('--train_minutes=%g: the training budget was spent at step %d of %d; not '
                 'training further (raise --train_minutes or use a new --workdir to train more)',
                 t.train_minutes, step, total)
  with _stop_on_signals() as stop:
    while step < total and not spent:
      chunk = min(t.log_freq - step % t.log_freq, t.snapshot_freq - step % t.snapshot_freq,
                  total - step, t.max_chunk_steps)
      start = time.time()
      stats = {k: v.numpy() for k, v in train_chunk(iterator, tf.constant(chunk)).items()}
      if stats['bad_step'] >= 0:
        _raise_nonfinite(stats, state.sigmas, latest_saved[0])
      step = int(state.step.numpy())
      logged = _accumulate(logged, stats)
      logged_time += time.time() - start
      logged_steps += chunk
      spent = out_of_time(seconds_so_far())
      last = step == total or spent  # The final chunk: log, save and sample as at train_steps.
      if step % t.log_freq == 0 or last:
        skipped_total += int(logged['skipped'])
        # Adam's current rate, the one the next update uses (--lr_schedule).
        lr = float(state.optimizer.learning_rate.numpy())
        _write_scalars(writer, step, logged, state.sigmas, lr,
                       logged_steps / max(logged_time, 1e-9), t.skip_nonfinite)
        if logged['skipped']:
          logging.warning('skipped %d non-finite step(s) up to step %d (%d in all)',
                          int(logged['skipped']), step, skipped_total)
        progress.update(step, loss=float(logged['loss_sum'] / max(logged['per_sigma_count'].sum(), 1)))
        logged, logged_time, logged_steps = None, 0.0, 0
      if step % t.snapshot_freq == 0 or last:
        save(step)
        saved_step = step
        if heldout_eval is not None:
          _write_heldout(writer, step, heldout_eval(), state.sigmas)
        if on_snapshot is not None and chief:
          on_snapshot(state, writer)
      if any_worker(stop.signum is not None) and step < total:
        if saved_step != step:
          save(step)
        writer.flush()
        progress.close()
        name = signal.Signals(stop.signum).name if stop.signum else 'another worker'
        message = (f'stopped by {name} at step {step}: saved checkpoint {latest_saved[0]}; '
                   f'run the same command again to resume')
        logging.warning(message)
        raise TrainingInterrupted(message, stop.signum or signal.SIGTERM)
  progress.close()
  if spent and step > start_step:
    logging.info('--train_minutes=%g: stopped at step %d of %d after %.1f minutes of training',
                 t.train_minutes, step, total, seconds_so_far() / 60)
  if saved_step != step:
    save(step)
  writer.flush()
  return state


def _raise_nonfinite(stats, sigmas, last_checkpoint):
  level = int(stats['bad_level'])
  where = f'σ level {level} (σ={sigmas[level]:.4g})' if level >= 0 else 'a gradient'
  raise NonFiniteLossError(
      f'non-finite loss at step {int(stats["bad_step"])} in {where}; nothing was saved after it, '
      f'the latest checkpoint is {last_checkpoint or "none"}. Lower --learning_rate or check the data.')


# --- checkpoints for evaluation sweeps -----------------------------------------

def checkpoint_steps(config: config_lib.Config) -> dict:
  """{step: checkpoint prefix} of every checkpoint kept in <workdir>/checkpoints, by step."""
  state = tf.train.get_checkpoint_state(checkpoint_dir(config))
  paths = list(state.all_model_checkpoint_paths) if state else []
  found = {}
  for path in paths:
    if not os.path.isabs(path):
      path = os.path.join(checkpoint_dir(config), path)
    if tf.io.gfile.exists(path + '.index'):
      found[int(path.rsplit('-', 1)[1])] = path
  return dict(sorted(found.items()))


def restore_step(state: TrainState, path: str) -> int:
  """Restores the checkpoint `path` into an existing state in place; returns its step.

  Reusing one state across a sweep keeps traced functions that close over its
  models valid (no re-tracing per checkpoint).
  """
  state.checkpoint().restore(path).expect_partial()
  step = int(state.step.numpy())
  logging.info('restored %s (step %d)', path, step)
  return step
