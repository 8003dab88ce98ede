"""Numeric precision of the score network: float32 or Keras mixed precision.

`resolve(precision, model_name)` turns `--precision=auto` into a concrete
Keras dtype policy; `policy_scope(name)` builds layers under that policy
without leaving a process-wide global behind (layers keep the policy they were
built with). Normalisation statistics and the loss stay in float32 whatever
the policy (CIN++ and losses.py cast explicitly).
"""

import contextlib

import keras
import tensorflow as tf

from ncsn_tf.models import registry as networks


def _has_gpu() -> bool:
  return bool(tf.config.list_physical_devices('GPU'))


def resolve(precision: str, model_name: str) -> str:
  """A concrete policy name for `precision` ('auto' or a Keras policy name).

  auto, chosen by measurement (benchmarks/bench.py; table in benchmarks/RESULTS.md):
  * the toy MLP: float32. Its steps are op-overhead bound (2-D inputs, 128
    units); casts to and from bfloat16 only add ops.
  * RefineNet on CPU: mixed_bfloat16. On a 2-core AVX512-BF16 CPU (oneDNN's
    brgconv bf16 kernels) the CIFAR-10 train step ran 1.6-1.8x and the Langevin
    step 1.7-1.8x faster than float32 (b=8 to 64); XLA (--jit_compile) was slower.
  * RefineNet on GPU: mixed_float16 (tensor cores; not measured here, no GPU).
  * The U-Net follows the RefineNet. At width 16, 32x32, batch 16 its CPU
    training step was a tie with GroupNorm (148 ms mixed_bfloat16, 150 ms
    float32, medians of five alternating fresh processes) and 1.2x faster in
    bfloat16 without it, as in shapes.cfg (78 and 76 against 93 and 89 ms, two
    alternating pairs); wider U-Nets were not measured.
  """
  if precision != 'auto':
    return precision
  # Only the image score networks gain from reduced precision; a classifier's
  # gradient steers guidance, and the toy MLP is too small to gain.
  if model_name not in networks.names() or networks.get(model_name).data != 'image':
    return 'float32'
  return 'mixed_float16' if _has_gpu() else 'mixed_bfloat16'


@contextlib.contextmanager
def policy_scope(policy: str):
  """Layers constructed inside use `policy`; the previous global policy returns after."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def make_optimizer(policy: str, learning_rate, beta_1: float) -> keras.optimizers.Optimizer:
  """Adam; wrapped in a dynamic LossScaleOptimizer under float16 (bfloat16 needs none).

  `learning_rate` is a float or a keras LearningRateSchedule (ncsn_tf/runtime/lr_schedule.py).
  """
  optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1)
  if policy == 'mixed_float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer
