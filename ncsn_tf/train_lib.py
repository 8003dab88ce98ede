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
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import data as data_lib
from ncsn_tf import losses
from ncsn_tf import models
from ncsn_tf import sigmas as sigmas_lib
from ncsn_tf.progress import Progress


class NonFiniteLossError(RuntimeError):
  """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""


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


def make_strategy(num_cpu_replicas: int = 0) -> tf.distribute.Strategy:
  """MirroredStrategy on all GPUs, or on N logical CPUs, else the default strategy."""
  if num_cpu_replicas > 1:
    configure_cpu_replicas(num_cpu_replicas)
    cpus = tf.config.list_logical_devices('CPU')[:num_cpu_replicas]
    return tf.distribute.MirroredStrategy([d.name for d in cpus])
  if tf.config.list_physical_devices('GPU'):
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


# --- state -------------------------------------------------------------------

@dataclasses.dataclass
class TrainState:
  """Everything a checkpoint holds, built inside the strategy's scope."""
  model: keras.Model
  ema_model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  sigmas: np.ndarray

  def checkpoint(self, **extra) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(step=self.step, model=self.model, ema_model=self.ema_model,
                               optimizer=self.optimizer, **extra)


def ladder(config: config_lib.Config) -> np.ndarray:
  m = config.model
  return sigmas_lib.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_scales)


def create_state(config: config_lib.Config, strategy: tf.distribute.Strategy) -> TrainState:
  shape = data_lib.data_shape(config.data)
  with strategy.scope():
    model = models.build_model(config, shape)
    ema_model = models.build_model(config, shape)
    ema_model.set_weights(model.get_weights())
    optimizer = keras.optimizers.Adam(learning_rate=config.train.learning_rate,
                                      beta_1=config.train.beta1)
    # Keras 3 optimizers must create their slots inside the scope before the
    # first tf.function step, or MirroredStrategy fails on a placeholder.
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
  return TrainState(model, ema_model, optimizer, step, ladder(config))


def checkpoint_dir(config: config_lib.Config) -> str:
  return os.path.join(config.workdir, 'checkpoints')


def restore_for_inference(config: config_lib.Config, strategy=None) -> TrainState:
  """A TrainState restored from the latest checkpoint (error if there is none)."""
  strategy = strategy or tf.distribute.get_strategy()
  state = create_state(config, strategy)
  latest = tf.train.latest_checkpoint(checkpoint_dir(config))
  if latest is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(config)}: train first '
                            f'(--mode=train with the same --workdir)')
  state.checkpoint().restore(latest).expect_partial()
  logging.info('restored %s (step %d)', latest, int(state.step.numpy()))
  return state


def write_config_json(config: config_lib.Config):
  os.makedirs(config.workdir, exist_ok=True)
  path = os.path.join(config.workdir, 'config.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json())
  os.replace(tmp, path)


# --- the step ------------------------------------------------------------------

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

  def replica_step(x):
    ctx = tf.distribute.get_replica_context()
    seed = tf.stack([tf.constant(config.seed, tf.int32),
                     tf.cast(step, tf.int32) * ctx.num_replicas_in_sync + ctx.replica_id_in_sync_group])
    with tf.GradientTape() as tape:
      loss_vec, sigma_index = losses.anneal_dsm_per_example(
          lambda xx, ii: model(xx, ii, training=True), x, sigmas, seed)
      loss = tf.reduce_sum(loss_vec) / global_batch
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    nonfinite = tf.cast(tf.logical_not(tf.math.is_finite(loss_vec)), tf.float32)
    # Counts of non-finite examples per level: a SUM all-reduce of these works
    # for every strategy (ReduceOp has no MIN).
    bad_counts = tf.math.unsorted_segment_sum(nonfinite, sigma_index, num_scales)
    grads_finite = tf.math.is_finite(tf.linalg.global_norm(grads))
    counts = tf.math.unsorted_segment_sum(tf.ones_like(loss_vec), sigma_index, num_scales)
    # Non-finite examples would poison the loss sum: count them, add zeros.
    loss_vec = tf.where(nonfinite > 0, 0.0, loss_vec)
    sums = tf.math.unsorted_segment_sum(loss_vec, sigma_index, num_scales)
    return (tf.reduce_sum(loss_vec), sums, counts, bad_counts,
            tf.cast(tf.logical_not(grads_finite), tf.int32))

  def reduce(op, value):
    return strategy.reduce(op, value, axis=None)

  @tf.function
  def train_chunk(iterator, num_steps):
    loss_sum = tf.constant(0.0)
    per_sigma_sum = tf.zeros([num_scales])
    per_sigma_count = tf.zeros([num_scales])
    bad_step = tf.constant(-1, tf.int64)
    bad_level = tf.constant(-1)
    for _ in tf.range(num_steps):
      out = strategy.run(replica_step, args=(next(iterator),))
      loss_sum += reduce(tf.distribute.ReduceOp.SUM, out[0])
      per_sigma_sum += reduce(tf.distribute.ReduceOp.SUM, out[1])
      per_sigma_count += reduce(tf.distribute.ReduceOp.SUM, out[2])
      bad_counts = reduce(tf.distribute.ReduceOp.SUM, out[3])
      grads_bad = reduce(tf.distribute.ReduceOp.SUM, out[4])
      if ema_rate > 0:
        for ema_var, var in zip(ema_model.weights, model.weights):
          ema_var.assign(ema_rate * ema_var + (1.0 - ema_rate) * var)
      step.assign_add(1)
      if tf.reduce_any(bad_counts > 0) or grads_bad > 0:
        bad_step = step - 1
        # The largest σ (lowest index) with a non-finite term, or -1 if only
        # a gradient was non-finite.
        bad_level = tf.cond(tf.reduce_any(bad_counts > 0),
                            lambda: tf.cast(tf.argmax(tf.cast(bad_counts > 0, tf.int32)), tf.int32),
                            lambda: tf.constant(-1))
        break
    return {'loss_sum': loss_sum, 'per_sigma_sum': per_sigma_sum,
            'per_sigma_count': per_sigma_count, 'bad_step': bad_step, 'bad_level': bad_level}

  return train_chunk


# --- the loop ------------------------------------------------------------------

def _write_scalars(writer, step, stats, sigmas, lr, steps_per_sec):
  count = stats['per_sigma_count']
  with writer.as_default(step=step):
    tf.summary.scalar('loss', stats['loss_sum'] / max(count.sum(), 1.0))
    for i, (s, c) in enumerate(zip(stats['per_sigma_sum'], count)):
      if c > 0:
        tf.summary.scalar(f'loss_per_sigma/level_{i:02d}_sigma_{sigmas[i]:.3g}', s / c)
    tf.summary.scalar('learning_rate', lr)
    tf.summary.scalar('steps_per_sec', steps_per_sec)
  writer.flush()


def train(config: config_lib.Config, *, on_snapshot=None) -> TrainState:
  """Trains (or resumes) until `config.train.train_steps`; returns the state.

  on_snapshot: optional callable (state, writer) run after each checkpoint,
    e.g. to log image samples.
  """
  write_config_json(config)
  strategy = make_strategy(config.train.num_cpu_replicas)
  logging.info('strategy %s with %d replica(s)', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  state = create_state(config, strategy)
  ckpt = state.checkpoint()
  manager = tf.train.CheckpointManager(ckpt, checkpoint_dir(config),
                                       max_to_keep=config.train.max_checkpoints)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info('resumed from %s at step %d', manager.latest_checkpoint, int(state.step.numpy()))
  # The data position is a function of the step (one batch per pipeline per
  # step): distributed iterators cannot be checkpointed on several devices.
  dataset = strategy.distribute_datasets_from_function(
      data_lib.dataset_fn(config, start_batch=int(state.step.numpy())))
  iterator = iter(dataset)
  writer = tf.summary.create_file_writer(os.path.join(config.workdir, 'tensorboard'))
  train_chunk = make_train_chunk(config, strategy, state)
  total = config.train.train_steps
  progress = Progress('train', total)
  step = int(state.step.numpy())
  while step < total:
    chunk = min(config.train.log_freq - step % config.train.log_freq,
                config.train.snapshot_freq - step % config.train.snapshot_freq, total - step)
    start = time.time()
    stats = {k: v.numpy() for k, v in train_chunk(iterator, tf.constant(chunk)).items()}
    if stats['bad_step'] >= 0:
      _raise_nonfinite(stats, state.sigmas, manager.latest_checkpoint)
    step = int(state.step.numpy())
    steps_per_sec = chunk / max(time.time() - start, 1e-9)
    _write_scalars(writer, step, stats, state.sigmas, config.train.learning_rate, steps_per_sec)
    progress.update(step, loss=float(stats['loss_sum'] / max(stats['per_sigma_count'].sum(), 1)))
    if step % config.train.snapshot_freq == 0 or step == total:
      manager.save(checkpoint_number=step)
      if on_snapshot is not None:
        on_snapshot(state, writer)
  progress.close()
  if manager.latest_checkpoint is None or int(manager.latest_checkpoint.rsplit('-', 1)[1]) != step:
    manager.save(checkpoint_number=step)
  writer.flush()
  return state


def _raise_nonfinite(stats, sigmas, last_checkpoint):
  level = int(stats['bad_level'])
  where = f'σ level {level} (σ={sigmas[level]:.4g})' if level >= 0 else 'a gradient'
  raise NonFiniteLossError(
      f'non-finite loss at step {int(stats["bad_step"])} in {where}; nothing was saved after it, '
      f'the latest checkpoint is {last_checkpoint or "none"}. Lower --learning_rate or check the data.')


def read_metrics_json(workdir: str) -> dict:
  path = os.path.join(workdir, 'metrics.json')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
