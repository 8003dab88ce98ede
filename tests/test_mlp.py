import keras
import numpy as np

from ncsn_tf.models.mlp import NoiseConditionalMLP

SIGMAS = [4.0, 1.0, 0.25]


def test_shapes_and_parameter_count():
  model = NoiseConditionalMLP(2, SIGMAS, hidden_units=16, num_layers=2).build_for()
  out = model(np.zeros((5, 2), np.float32), np.array([0, 1, 2, 0, 1], np.int32))
  assert out.shape == (5, 2) and out.dtype == 'float32'
  # Dense 2->16, 16->16, head 16->2, plus γ, β per layer [3, 16].
  assert model.count_params() == (2 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2) + 2 * 2 * 3 * 16


def test_scale_by_sigma_divides_by_the_level_sigma():
  model = NoiseConditionalMLP(2, SIGMAS, hidden_units=8, scale_by_sigma=True).build_for()
  raw = NoiseConditionalMLP(2, SIGMAS, hidden_units=8, scale_by_sigma=False).build_for()
  raw.set_weights(model.get_weights())
  x = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
  index = np.array([0, 1, 2], np.int32)
  np.testing.assert_allclose(model(x, index), raw(x, index) / np.array(SIGMAS)[:, None], rtol=1e-5)


def test_conditioning_changes_the_output_and_config_round_trips():
  model = NoiseConditionalMLP(2, SIGMAS, hidden_units=8).build_for()
  for affine in model.affines:  # Make the per-level affines differ.
    affine.gamma.assign(np.random.default_rng(1).normal(size=affine.gamma.shape))
  x = np.ones((1, 2), np.float32)
  assert not np.allclose(model(x, np.array([0])) * 4.0, model(x, np.array([1])) * 1.0)
  clone = NoiseConditionalMLP.from_config(model.get_config()).build_for()
  clone.set_weights(model.get_weights())
  np.testing.assert_allclose(clone(x, np.array([2])), model(x, np.array([2])), rtol=1e-6)
  assert isinstance(clone, keras.Model)
