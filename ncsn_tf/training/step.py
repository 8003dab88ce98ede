"""The training step: the loss of --loss (or the classifier's) and one compiled chunk of steps.

* `objective_for`: fn(batch, sigmas, seed) -> per-example loss, level index and
  (for classifiers) correctness, from ncsn_tf/losses.py.
* `make_train_chunk`: a tf.function that runs many steps in one call; each
  step is `strategy.run` of a single-replica step with the loss averaged over
  the global batch, the EMA update after it, and no host work between steps.
"""

import keras
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import losses
from ncsn_tf import noise
from ncsn_tf.data import toy
from ncsn_tf.models import registry as networks
from ncsn_tf.runtime import checkpoints


def loss_for(config: config_lib.Config, *, uniform_levels: bool = False):
  """The per-example loss of `config.train.loss` with its options bound.

  `uniform_levels` ignores --level_sampling: the held-out loss always draws
  levels uniformly, so its mean is comparable between runs that trained with
  different level distributions.
  """
  t = config.train
  level_logits = log_sigma_normal = None
  if t.level_sampling == 'lognormal' and not uniform_levels:
    # The ladder's levels, or the continuous loss's σ over the VE range.
    level_logits = losses.lognormal_level_logits(checkpoints.ladder(config), t.level_log_mean,
                                                 t.level_log_std)
    log_sigma_normal = (t.level_log_mean, t.level_log_std)
  sde = None
  if t.loss == 'continuous_dsm':
    sde = noise.build_sde(config.model)
  weighting = 'sigma2'
  if t.likelihood_weighting:
    weighting = 'likelihood'
  elif t.edm_weighting:
    weighting = 'edm'
  return losses.get_loss(
      t.loss, num_projections=t.num_projections, projection=t.projection,
      level_logits=level_logits, sde=sde, weighting=weighting,
      log_sigma_normal=log_sigma_normal, sigma_data=config.model.sigma_data,
      label_dropout=t.label_dropout if config.model.class_conditional else None,
      num_classes=networks.label_count(config) if config.model.class_conditional else None,
      exact_score_fn=toy.get_toy(config.data.dataset).score if config.data.is_toy else None)


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
    sde = noise.build_sde(config.model)

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
                     state: checkpoints.TrainState):
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
