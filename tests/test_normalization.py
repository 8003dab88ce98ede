"""Tests for ncsn_tf.models.normalization (CIN++).

The layer is checked against an independent numpy transcription of the formula
in Song & Ermon 2019, appendix A, with the reference's conventions: ε = 1e-5,
biased spatial variance, unbiased variance of the channel means.
"""

import keras
import numpy as np

from ncsn_tf.models.normalization import ConditionalInstanceNormPlusPlus
from ncsn_tf.models.normalization import EPSILON

NUM_CLASSES = 5
# float32 arithmetic on O(1) values, different summation orders: ~1e-6 relative.
ATOL = RTOL = 1e-5


def _numpy_cin_pp(x, labels, gamma, alpha, beta):
  """CIN++ in float64 numpy: x [N, H, W, C], labels [N], tables [L, C]."""
  x = x.astype(np.float64)
  mu = x.mean(axis=(1, 2))                                   # [N, C]
  var = x.var(axis=(1, 2))                                   # biased, [N, C]
  mu_std = (mu - mu.mean(axis=1, keepdims=True)) / np.sqrt(
      mu.var(axis=1, ddof=1, keepdims=True) + EPSILON)       # unbiased across C
  x_hat = (x - mu[:, None, None, :]) / np.sqrt(var[:, None, None, :] + EPSILON)
  g, a, b = (t[labels][:, None, None, :] for t in (gamma, alpha, beta))
  return g * (x_hat + a * mu_std[:, None, None, :]) + b


def _layer_with_params(rng, channels, alpha_scale=1.0):
  """A built CIN++ layer whose γ, α, β are random and far from their init."""
  layer = ConditionalInstanceNormPlusPlus(NUM_CLASSES)
  layer.build((None, None, None, channels))
  shape = (NUM_CLASSES, channels)
  params = {
      'gamma': rng.uniform(0.5, 2.0, shape).astype(np.float32),
      'alpha': (alpha_scale * rng.normal(0.0, 1.0, shape)).astype(np.float32),
      'beta': rng.normal(0.0, 1.0, shape).astype(np.float32),
  }
  for name, value in params.items():
    getattr(layer, name).assign(value)
  return layer, params


def _random_inputs(rng, n=4, size=6, channels=7):
  # Per-channel offsets and scales make μ non-trivial, so the α term matters.
  offsets = rng.normal(0.0, 3.0, (n, 1, 1, channels))
  scales = rng.uniform(0.5, 4.0, (n, 1, 1, channels))
  x = offsets + scales * rng.normal(size=(n, size, size, channels))
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  return x.astype(np.float32), labels


def test_matches_numpy_formula():
  rng = np.random.default_rng(0)
  x, labels = _random_inputs(rng)
  layer, params = _layer_with_params(rng, x.shape[-1])
  out = keras.ops.convert_to_numpy(layer(x, labels))
  np.testing.assert_allclose(out, _numpy_cin_pp(x, labels, **params), atol=ATOL, rtol=RTOL)


def test_without_bias_matches_formula_with_zero_beta():
  rng = np.random.default_rng(1)
  x, labels = _random_inputs(rng)
  layer = ConditionalInstanceNormPlusPlus(NUM_CLASSES, bias=False)
  out = keras.ops.convert_to_numpy(layer(x, labels))
  assert len(layer.weights) == 2
  gamma = keras.ops.convert_to_numpy(layer.gamma)
  alpha = keras.ops.convert_to_numpy(layer.alpha)
  expected = _numpy_cin_pp(x, labels, gamma, alpha, np.zeros_like(gamma))
  np.testing.assert_allclose(out, expected, atol=ATOL, rtol=RTOL)


def test_alpha_zero_gives_instance_norm_moments():
  """α = 0: each (image, channel) map has mean β[i] and std γ[i] sqrt(s²/(s²+ε))."""
  rng = np.random.default_rng(2)
  x, labels = _random_inputs(rng, size=16)
  layer, params = _layer_with_params(rng, x.shape[-1], alpha_scale=0.0)
  out = keras.ops.convert_to_numpy(layer(x, labels)).astype(np.float64)
  var = x.astype(np.float64).var(axis=(1, 2))
  expected_std = params['gamma'][labels] * np.sqrt(var / (var + EPSILON))
  np.testing.assert_allclose(out.mean(axis=(1, 2)), params['beta'][labels], atol=1e-5)
  np.testing.assert_allclose(out.std(axis=(1, 2)), expected_std, rtol=1e-5)


def test_alpha_term_restores_channel_means():
  """A per-channel constant shift is invisible to instance norm but not to CIN++."""
  rng = np.random.default_rng(3)
  x, labels = _random_inputs(rng)
  shift = rng.normal(0.0, 5.0, (1, 1, 1, x.shape[-1])).astype(np.float32)
  layer, _ = _layer_with_params(rng, x.shape[-1], alpha_scale=0.0)
  same = layer(x, labels) - layer(x + shift, labels)
  np.testing.assert_allclose(keras.ops.convert_to_numpy(same), 0.0, atol=1e-4)
  layer.alpha.assign(np.ones_like(keras.ops.convert_to_numpy(layer.alpha)))
  differ = keras.ops.convert_to_numpy(layer(x, labels) - layer(x + shift, labels))
  assert np.abs(differ).max() > 0.1


def test_single_channel_is_finite():
  # The reference's torch.var over one channel is NaN; here the α term is 0.
  rng = np.random.default_rng(4)
  x, labels = _random_inputs(rng, channels=1)
  out = keras.ops.convert_to_numpy(ConditionalInstanceNormPlusPlus(NUM_CLASSES)(x, labels))
  assert np.all(np.isfinite(out))


def test_initialisation():
  layer = ConditionalInstanceNormPlusPlus(1000)
  layer.build((None, 4, 4, 64))
  for table in (layer.gamma, layer.alpha):
    values = keras.ops.convert_to_numpy(table)
    assert abs(values.mean() - 1.0) < 2e-3 and abs(values.std() - 0.02) < 2e-3
  assert np.all(keras.ops.convert_to_numpy(layer.beta) == 0.0)
  assert layer.count_params() == 3 * 1000 * 64


def test_get_config_round_trip():
  layer = ConditionalInstanceNormPlusPlus(7, bias=False, name='cin')
  config = layer.get_config()
  assert config['num_classes'] == 7 and config['bias'] is False
  clone = ConditionalInstanceNormPlusPlus.from_config(config)
  assert clone.get_config() == config


def test_mixed_precision_keeps_float32_statistics(mixed_bfloat16):
  rng = np.random.default_rng(5)
  x, labels = _random_inputs(rng)
  layer = ConditionalInstanceNormPlusPlus(NUM_CLASSES)
  out = layer(x, labels)
  assert layer.compute_dtype == 'bfloat16'
  assert all(w.dtype == 'float32' for w in layer.weights)
  assert out.dtype == 'bfloat16'
  # Against float32 maths on the bfloat16-rounded input: only output rounding
  # (8-bit mantissa, ~0.4% relative) separates them.
  x_bf16 = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, 'bfloat16'), 'float32'))
  tables = [keras.ops.convert_to_numpy(t) for t in (layer.gamma, layer.alpha, layer.beta)]
  expected = _numpy_cin_pp(x_bf16, labels, *tables)
  out32 = keras.ops.convert_to_numpy(keras.ops.cast(out, 'float32'))
  np.testing.assert_allclose(out32, expected, rtol=1e-2, atol=1e-2)
