"""The held-out loss at each snapshot: the same batches and noise every time, per σ level.

For --task=classifier also the held-out accuracy per σ (TensorBoard per level,
the log per bucket of neighbouring levels).
"""

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.runtime import checkpoints
from ncsn_tf.training import step as train_step


def make_heldout_eval(config: config_lib.Config, state: checkpoints.TrainState):
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
                                     with_labels=train_step.needs_labels(config))
  batches = list(make_dataset(None).take(config.train.heldout_batches))
  objective = train_step.objective_for(config, state.ema_model, training=False, uniform_levels=True)
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
