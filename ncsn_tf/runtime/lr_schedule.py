"""The learning rate over training: optional linear warmup, then constant or cosine.

`--lr_schedule=constant` (the papers' NCSN and NCSNv2 setting) keeps Adam at
`--learning_rate` throughout. `--lr_schedule=cosine` decays it to zero over the
run, lr(t) = peak · (1 + cos(π (t - w) / (T - w))) / 2 for w <= t <= T, where T is
`--train_steps` and w is `--warmup_steps`. Short runs gain most from the decay:
the last updates are small, so the final weights settle instead of ending on a
full-size Adam step. `--warmup_steps=w` ramps linearly from 0 to the peak over the
first w updates (score_sde uses 5000).

The schedule is a function of the optimizer's update counter, which the
checkpoint saves, so a resumed run continues where it stopped. Changing
`--train_steps` on resume moves the cosine horizon T; the new T applies from the
resumed step on.
"""

import math

import keras
import tensorflow as tf

from ncsn_tf.config import LR_SCHEDULES


@keras.saving.register_keras_serializable(package='ncsn_tf')
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup over `warmup_steps`, then `decay` ('constant' or 'cosine') to `total_steps`.

  Args:
    peak: the learning rate after warmup (> 0).
    warmup_steps: updates of the linear ramp 0 -> peak (>= 0).
    total_steps: T, the update at which the cosine reaches 0 (ignored by 'constant').
    decay: 'constant' or 'cosine'.

  Called with the update counter t (int or float scalar tensor, t = 0 for the
  first update), returns a float32 scalar in [0, peak].
  """

  def __init__(self, peak: float, warmup_steps: int = 0, total_steps: int = 0,
               decay: str = 'constant'):
    if decay not in LR_SCHEDULES:
      raise ValueError(f'decay must be one of {LR_SCHEDULES}, got {decay!r}')
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.total_steps = int(total_steps)
    self.decay = decay

  def __call__(self, step):
    t = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak, tf.float32)
    # The first update (t = 0) already gets peak / w, not 0, so no update is wasted.
    warm = peak * tf.minimum((t + 1.0) / max(self.warmup_steps, 1), 1.0)
    if self.decay == 'constant':
      return warm if self.warmup_steps else peak
    span = max(self.total_steps - self.warmup_steps, 1)
    progress = tf.clip_by_value((t - self.warmup_steps) / span, 0.0, 1.0)
    cosine = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
    return tf.where(t < self.warmup_steps, warm, cosine)

  def get_config(self):
    return dict(peak=self.peak, warmup_steps=self.warmup_steps,
                total_steps=self.total_steps, decay=self.decay)


def learning_rate(peak: float, schedule: str = 'constant', warmup_steps: int = 0,
                  total_steps: int = 0):
  """What Adam's `learning_rate` gets: the float itself when nothing varies, else a schedule."""
  if schedule == 'constant' and warmup_steps == 0:
    return peak
  return WarmupSchedule(peak, warmup_steps, total_steps, schedule)
