"""Tests for ncsn_tf.runtime.precision: the auto choice, float32 islands, and that
mixed precision learns what float32 learns.

The equivalence test trains a tiny RefineNet (ngf=8, 16x16x3 blob images, L=4)
through `training/step.py make_train_chunk` (STEPS steps, batch 8) twice from the same initial weights, data
and noise seeds: once in float32 and once in mixed_bfloat16. bfloat16 rounds
activations to 8 significant bits, so the two runs do not follow the same
trajectory step by step; what must agree is what they learn: the DSM loss
averaged over windows of WINDOW steps agrees within LOSS_RTOL everywhere along
the run, and both runs fall to a fraction of where they started.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import losses
from ncsn_tf.models.normalization import ConditionalInstanceNormPlusPlus
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import precision
from ncsn_tf.training import step as train_step

IMAGE_SIZE = 16
BATCH = 8
STEPS = 100
WINDOW = 10
# Windowed DSM losses of the float32 and mixed_bfloat16 runs agree within 2%
# (measured on a 2-core AVX512-BF16 CPU: at most 0.13% over the 10 windows,
# while the loss itself fell from ~397 to ~137).
LOSS_RTOL = 0.02


def test_resolve_auto_is_float32_for_the_mlp_and_mixed_for_image_models(monkeypatch):
  monkeypatch.setattr(precision, '_has_gpu', lambda: False)
  assert precision.resolve('auto', 'mlp') == 'float32'
  assert precision.resolve('auto', 'refinenet') == 'mixed_bfloat16'
  assert precision.resolve('auto', 'unet') == 'mixed_bfloat16'
  monkeypatch.setattr(precision, '_has_gpu', lambda: True)
  assert precision.resolve('auto', 'refinenet') == 'mixed_float16'
  assert precision.resolve('auto', 'unet') == 'mixed_float16'
  assert precision.resolve('auto', 'mlp') == 'float32'


@pytest.mark.parametrize('name', ['float32', 'mixed_bfloat16', 'mixed_float16'])
def test_resolve_passes_explicit_policies_through(name):
  assert precision.resolve(name, 'refinenet') == name
  assert precision.resolve(name, 'mlp') == name


def test_policy_scope_restores_the_global_policy():
  before = keras.mixed_precision.global_policy().name
  with precision.policy_scope('mixed_bfloat16'):
    assert keras.mixed_precision.global_policy().name == 'mixed_bfloat16'
  assert keras.mixed_precision.global_policy().name == before


def test_float16_gets_a_loss_scale_optimizer_and_bfloat16_does_not():
  assert isinstance(precision.make_optimizer('mixed_float16', 1e-3, 0.9),
                    keras.optimizers.LossScaleOptimizer)
  assert not isinstance(precision.make_optimizer('mixed_bfloat16', 1e-3, 0.9),
                        keras.optimizers.LossScaleOptimizer)


def test_cin_plus_plus_computes_statistics_and_parameters_in_float32_under_mixed_policy():
  with precision.policy_scope('mixed_bfloat16'):
    norm = ConditionalInstanceNormPlusPlus(4)
    norm.build((2, 8, 8, 6))
  assert all(w.dtype == 'float32' for w in norm.weights)
  x = tf.random.stateless_normal([2, 8, 8, 6], [0, 1], dtype=tf.bfloat16)
  labels = tf.constant([0, 3])
  graph = tf.function(lambda x, i: norm(x, i)).get_concrete_function(x, labels).graph
  reductions = [op for op in graph.get_operations() if op.type in ('Mean', 'Sum', 'Rsqrt')]
  assert reductions
  assert all(op.outputs[0].dtype == tf.float32 for op in reductions)
  out = norm(x, labels)
  assert out.dtype == tf.bfloat16
  # Against float64 numpy on the same bfloat16 inputs: only the final rounding to bfloat16.
  x64 = x.numpy().astype(np.float64)
  mean = x64.mean(axis=(1, 2), keepdims=True)
  normalized = (x64 - mean) / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + 1e-5)
  m = (mean - mean.mean(-1, keepdims=True)) / np.sqrt(mean.var(-1, ddof=1, keepdims=True) + 1e-5)
  gamma, alpha, beta = (v.numpy()[labels.numpy()][:, None, None, :]
                        for v in (norm.gamma, norm.alpha, norm.beta))
  expected = gamma * (normalized + alpha * m) + beta
  np.testing.assert_allclose(out.numpy().astype(np.float64), expected, rtol=2**-7, atol=2**-7)


def test_anneal_dsm_loss_is_float32_for_a_low_precision_score():
  x = tf.random.stateless_uniform([4, 8, 8, 3], [0, 2])
  sigmas = tf.constant([1.0, 0.5, 0.1])
  loss, _ = losses.anneal_dsm_per_example(
      lambda xx, ii: tf.cast(-xx, tf.bfloat16), x, sigmas, tf.constant([1, 2]))
  assert loss.dtype == tf.float32


def _blob_images(count, seed=0):
  """Smooth random images in [0, 1]: a few Gaussian blobs of random colour each."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(np.arange(IMAGE_SIZE), np.arange(IMAGE_SIZE), indexing='ij'), -1)
  images = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE, 3))
  for n in range(count):
    for _ in range(3):
      centre = rng.uniform(2, IMAGE_SIZE - 2, 2)
      width = rng.uniform(1.5, 4.0)
      bump = np.exp(-((grid - centre)**2).sum(-1) / (2 * width**2))
      images[n] += bump[..., None] * rng.uniform(0.2, 1.0, 3)
  return np.clip(images, 0.0, 1.0).astype(np.float32)


def _windowed_losses(policy, initial_weights, images):
  config = config_lib.Config(name='precision', workdir='/unused', seed=3).replace(
      data={'dataset': 'shapes', 'image_size': IMAGE_SIZE},
      model={'name': 'refinenet', 'ngf': 8, 'num_scales': 4, 'sigma_begin': 1.0,
             'sigma_end': 0.05},
      train={'batch_size': BATCH, 'learning_rate': 1e-3, 'ema_rate': 0.0,
             'precision': policy})
  strategy = tf.distribute.get_strategy()
  state = checkpoints.create_state(config, strategy)
  if initial_weights is not None:
    state.model.set_weights(initial_weights)
  weights = state.model.get_weights()
  # The same batches in the same order for both runs.
  iterator = iter(tf.data.Dataset.from_tensor_slices(images).repeat().batch(BATCH))
  chunk = train_step.make_train_chunk(config, strategy, state)
  means = []
  for _ in range(STEPS // WINDOW):
    stats = chunk(iterator, tf.constant(WINDOW))
    means.append(float(stats['loss_sum']) / float(np.sum(stats['per_sigma_count'])))
  compute_dtype = state.model.layers[0].compute_dtype
  return np.array(means), weights, compute_dtype


def test_mixed_bfloat16_training_learns_what_float32_learns():
  images = _blob_images(128)
  keras.utils.set_random_seed(0)
  f32, weights, f32_dtype = _windowed_losses('float32', None, images)
  bf16, _, bf16_dtype = _windowed_losses('mixed_bfloat16', weights, images)
  assert (f32_dtype, bf16_dtype) == ('float32', 'bfloat16')
  assert np.all(np.isfinite(bf16))
  # Both learn: the last window is well below the first.
  assert f32[-1] < 0.6 * f32[0] and bf16[-1] < 0.6 * bf16[0], (f32, bf16)
  np.testing.assert_allclose(bf16, f32, rtol=LOSS_RTOL)
