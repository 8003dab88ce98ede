"""Tests for ncsn_tf.models.refinenet (the NCSN image score network).

Parameter counts are pinned to those of ermongroup/ncsn's CondRefineNetDilated
(counted from the PyTorch model). Functional tests use a tiny width (ngf=8).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf.models import refinenet
from ncsn_tf.models.refinenet import CondCRPBlock
from ncsn_tf.models.refinenet import ConditionalResidualBlock
from ncsn_tf.models.refinenet import CondRefineBlock
from ncsn_tf.models.refinenet import CondRefineNetDilated
from ncsn_tf.models.refinenet import ConvMeanPool

NUM_CLASSES = 10
TINY_NGF = 8
# (ngf, image_size, channels) -> parameters of the reference PyTorch model.
REFERENCE_PARAM_COUNTS = [
    ((128, 32, 3), 30_117_635),  # CIFAR-10 / CelebA
    ((64, 28, 1), 7_638_657),    # MNIST
]


def _inputs(image_size, channels, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, (batch, image_size, image_size, channels)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
  return x, labels


def _tiny_model(image_size=32, channels=3, **kwargs):
  return CondRefineNetDilated(TINY_NGF, NUM_CLASSES, image_size, channels, **kwargs)


@pytest.mark.parametrize('dims, expected', REFERENCE_PARAM_COUNTS)
def test_parameter_count_matches_reference(dims, expected):
  ngf, image_size, channels = dims
  model = CondRefineNetDilated(ngf, NUM_CLASSES, image_size, channels).build_for()
  assert model.count_params() == expected


@pytest.mark.parametrize('image_size, channels', [(28, 1), (32, 3), (64, 3)])
def test_output_shape_and_dtype(image_size, channels):
  x, labels = _inputs(image_size, channels)
  score = _tiny_model(image_size, channels)(x, labels)
  assert score.shape == x.shape
  assert score.dtype == 'float32'
  assert np.all(np.isfinite(keras.ops.convert_to_numpy(score)))


def test_noise_level_changes_output():
  x, _ = _inputs(32, 3)
  model = _tiny_model()
  first = keras.ops.convert_to_numpy(model(x, np.array([0, 0], np.int32)))
  second = keras.ops.convert_to_numpy(model(x, np.array([7, 7], np.int32)))
  # At initialisation γ, α differ across levels by ~0.02, so outputs differ by ~1e-3.
  assert np.abs(first - second).max() > 1e-5


def test_logit_transform_skips_rescaling():
  """With shared weights, f(x) without the transform equals f(2x - 1) with it."""
  x, labels = _inputs(32, 3)
  plain = _tiny_model().build_for()
  logit = _tiny_model(logit_transform=True).build_for()
  logit.set_weights(plain.get_weights())
  np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x, labels)),
                             keras.ops.convert_to_numpy(logit(2.0 * x - 1.0, labels)),
                             atol=1e-5)


def test_output_sigmas_divide_the_score_by_the_level_sigma():
  """NCSNv2 technique 3: s(x, i) = f(x, i) / σ_i with f the unscaled network."""
  x, _ = _inputs(32, 3, batch=3)
  labels = np.array([0, 4, 9], np.int32)
  ladder = np.geomspace(50.0, 0.01, NUM_CLASSES)
  raw = _tiny_model().build_for()
  scaled = _tiny_model(output_sigmas=ladder.tolist()).build_for()
  assert scaled.count_params() == raw.count_params()
  scaled.set_weights(raw.get_weights())
  expected = keras.ops.convert_to_numpy(raw(x, labels)) / ladder[labels][:, None, None, None]
  np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled(x, labels)), expected,
                             rtol=1e-5)
  assert scaled.get_config()['output_sigmas'] == pytest.approx(ladder.tolist())


def test_shared_norm_network_is_one_unconditional_field_divided_by_sigma():
  """conditional_norm=False (NCSNv2): s(x, i) = f(x) / σ_i for every level i.

  The independent reference is the paper's network with a single level (one
  CIN++ row, no output scaling): with the same weights it is f(x) itself.
  """
  x, _ = _inputs(32, 3, batch=3)
  ladder = np.geomspace(50.0, 0.01, NUM_CLASSES)
  shared = _tiny_model(output_sigmas=ladder.tolist(), conditional_norm=False).build_for()
  one_level = CondRefineNetDilated(TINY_NGF, 1, 32, 3).build_for()
  assert shared.count_params() == one_level.count_params()
  assert shared.count_params() < _tiny_model().build_for().count_params()
  one_level.set_weights(shared.get_weights())
  field = keras.ops.convert_to_numpy(one_level(x, np.zeros(3, np.int32)))
  for level in (0, 3, NUM_CLASSES - 1):
    labels = np.full(3, level, np.int32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shared(x, labels)) * ladder[level],
                               field, rtol=1e-5, atol=1e-6)
  clone = CondRefineNetDilated.from_config(shared.get_config()).build_for()
  assert not clone.conditional_norm and clone.count_params() == shared.count_params()


def test_shared_norm_needs_output_sigmas():
  with pytest.raises(ValueError, match='needs output_sigmas'):
    _tiny_model(conditional_norm=False)


def test_output_sigmas_must_match_the_levels():
  with pytest.raises(ValueError, match='num_classes=10'):
    _tiny_model(output_sigmas=[1.0, 0.1])


def test_get_config_round_trip():
  model = _tiny_model(28, 1, logit_transform=True)
  config = model.get_config()
  assert {k: config[k] for k in ('ngf', 'num_classes', 'image_size', 'channels',
                                 'logit_transform')} == {
      'ngf': TINY_NGF, 'num_classes': NUM_CLASSES, 'image_size': 28, 'channels': 1,
      'logit_transform': True}
  clone = CondRefineNetDilated.from_config(config).build_for()
  assert clone.count_params() == model.build_for().count_params()
  assert clone.get_config() == config


@pytest.mark.parametrize('layer', [
    ConvMeanPool(4, kernel_size=1, adjust_padding=True),
    ConditionalResidualBlock(4, 8, NUM_CLASSES, resample='down', dilation=2),
    CondCRPBlock(4, 2, NUM_CLASSES),
    CondRefineBlock([4, 6], 4, NUM_CLASSES, end=True),
], ids=lambda layer: type(layer).__name__)
def test_layer_config_round_trip(layer):
  config = layer.get_config()
  assert type(layer).from_config(config).get_config() == config


def test_gradients_reach_every_variable():
  x, labels = _inputs(28, 1)
  model = _tiny_model(28, 1)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(model(x, labels)))
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
  assert not missing
  assert len(grads) == len(model.weights)


def test_mixed_bfloat16(mixed_bfloat16):
  x, labels = _inputs(32, 3)
  model = _tiny_model()
  score = model(x, labels)
  assert score.dtype == 'float32' and score.shape == x.shape
  assert np.all(np.isfinite(keras.ops.convert_to_numpy(score)))
  assert model.begin_conv.compute_dtype == 'bfloat16'
  assert model.normalizer.compute_dtype == 'bfloat16'
  assert all(w.dtype == 'float32' for w in model.weights)


def test_resize_matches_tf_align_corners():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  ours = refinenet.resize_bilinear_align_corners(keras.ops.convert_to_tensor(x), 9, 14)
  theirs = tf.compat.v1.image.resize_bilinear(x, (9, 14), align_corners=True)
  np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), theirs.numpy(), atol=1e-5)


def test_crp_pooling_counts_zero_padding():
  """5x5 average with zero padding in the denominator (PyTorch count_include_pad)."""
  block = CondCRPBlock(1, 1, NUM_CLASSES)
  pooled = keras.ops.convert_to_numpy(block.pool(block.pad(np.ones((1, 6, 6, 1), np.float32))))
  assert pooled.shape == (1, 6, 6, 1)
  np.testing.assert_allclose(pooled[0, [0, 0, 2], [0, 2, 2], 0], [9 / 25, 15 / 25, 1.0])


def test_conv_mean_pool_is_conv_then_2x2_mean():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
  layer = ConvMeanPool(3)
  out = keras.ops.convert_to_numpy(layer(x))
  conv = keras.ops.convert_to_numpy(layer.conv(x))
  expected = (conv[:, ::2, ::2] + conv[:, 1::2, ::2] + conv[:, ::2, 1::2] + conv[:, 1::2, 1::2]) / 4
  np.testing.assert_allclose(out, expected, atol=1e-6)
  # adjust_padding lets an odd map (7x7) pool to 4x4, as in the reference.
  assert ConvMeanPool(3, adjust_padding=True)(np.zeros((1, 7, 7, 2), np.float32)).shape == (
      1, 4, 4, 3)


@pytest.mark.parametrize('dilation, expected_size', [(None, 4), (2, 8)])
def test_down_block_resolution(dilation, expected_size):
  """'down' halves the map only without dilation (dilated blocks keep resolution)."""
  block = ConditionalResidualBlock(4, 6, NUM_CLASSES, resample='down', dilation=dilation)
  out = block(np.zeros((1, 8, 8, 4), np.float32), np.zeros((1,), np.int32))
  assert out.shape == (1, expected_size, expected_size, 6)


def test_bias_layout_matches_reference():
  """RCU and CRP 3x3 convolutions have no bias; every other convolution has one."""
  block = CondRefineBlock([4, 4], 4, NUM_CLASSES)
  assert not any(conv.use_bias for rcu in [*block.adapt_convs, block.output_convs]
                 for row in rcu.convs for conv in row)
  assert not any(conv.use_bias for conv in block.crp.convs)
  assert all(conv.use_bias for conv in block.msf.convs)


def test_graph_mode_with_unknown_batch_matches_eager():
  """A tf.function with a [None, H, W, C] signature (train step, export) gives the eager result."""
  x, labels = _inputs(28, 1, batch=3)
  model = _tiny_model(28, 1).build_for()
  graph_fn = tf.function(model.__call__, input_signature=[
      tf.TensorSpec([None, 28, 28, 1], tf.float32), tf.TensorSpec([None], tf.int32)])
  np.testing.assert_allclose(graph_fn(x, labels).numpy(),
                             keras.ops.convert_to_numpy(model(x, labels)), atol=1e-5)


def test_keras_file_round_trip(tmp_path):
  x, labels = _inputs(32, 3)
  model = _tiny_model().build_for()
  path = str(tmp_path / 'ncsn.keras')
  model.save(path)
  restored = keras.models.load_model(path)
  assert isinstance(restored, CondRefineNetDilated)
  np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x, labels)),
                                keras.ops.convert_to_numpy(model(x, labels)))


def test_odd_image_size_is_rejected():
  with pytest.raises(ValueError, match='even'):
    CondRefineNetDilated(TINY_NGF, NUM_CLASSES, 27, 1)
