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


# --- ContinuousScoreMLP: s_θ(x, σ) for any σ > 0 -----------------------------


def _continuous(**kwargs):
  from ncsn_tf.models.mlp import ContinuousScoreMLP
  return ContinuousScoreMLP(2, **kwargs).build_for()


def test_continuous_mlp_shapes_and_parameter_count():
  model = _continuous()
  sigma = np.array([0.01, 0.3, 1.0, 7.0, 20.0], np.float32)
  out = model(np.zeros((5, 2), np.float32), sigma)
  assert out.shape == (5, 2) and out.dtype == 'float32'
  # Dense 2->128, 2x 128->128, head 128->2, and per layer a FiLM Dense from the
  # 2F = 32 Fourier features to (γ, β) [2 * 128]. The frequencies are not weights.
  h, e = 128, 32
  assert model.count_params() == ((2 * h + h) + 2 * (h * h + h) + (h * 2 + 2)
                                  + 3 * (e * 2 * h + 2 * h)) == 59_010
  assert len(model.non_trainable_weights) == 0


def test_continuous_mlp_preconditions_by_sigma_and_starts_sigma_blind():
  # FiLM starts at γ = 1, β = 0 for every σ, so the untrained network is
  # head(MLP(x/sqrt(1 + σ²)))/σ: σ enters only through the two scalings.
  model = _continuous(hidden_units=16)
  x = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
  sigma = np.array([0.1, 1.0, 5.0], np.float32)
  # At σ = 1 the network sees x/√2 and divides by 1: feed it the input it sees at σ.
  seen = x / np.sqrt(1.0 + sigma**2)[:, None]
  expected = np.asarray(model(np.sqrt(2.0) * seen, np.ones(3, np.float32))) / sigma[:, None]
  np.testing.assert_allclose(model(x, sigma), expected, rtol=1e-5, atol=1e-6)


def test_continuous_mlp_config_round_trips_with_the_same_frequencies():
  from ncsn_tf.models.mlp import ContinuousScoreMLP
  model = _continuous(hidden_units=8, num_layers=2, fourier_features=4, fourier_scale=2.0)
  for film in model.films:  # make σ matter
    film.film.kernel.assign(np.random.default_rng(1).normal(size=film.film.kernel.shape))
  clone = ContinuousScoreMLP.from_config(model.get_config()).build_for()
  clone.set_weights(model.get_weights())
  np.testing.assert_array_equal(clone._frequencies, model._frequencies)
  x, sigma = np.ones((2, 2), np.float32), np.array([0.05, 3.0], np.float32)
  np.testing.assert_array_equal(clone(x, sigma), model(x, sigma))
  # A different seed draws different frequencies; σ now changes the field itself.
  other = _continuous(hidden_units=8, num_layers=2, fourier_features=4, fourier_seed=1)
  assert not np.allclose(other._frequencies, model._frequencies)
  a, b = np.asarray(model(x[:1], sigma[:1])), np.asarray(model(x[:1], sigma[1:]))
  assert not np.allclose(a * sigma[0], b * sigma[1], rtol=1e-2)


def test_continuous_mlp_learns_the_paper_mixture_with_continuous_dsm():
  # tf_configs/toy_gmm_sde.cfg's recipe cut to 300 steps: Adam 1e-3, batch 256, log-uniform σ in
  # [0.01, 20]. The loss is measured on one fixed batch and one fixed draw of
  # (σ, z), so before/after/exact differ only through the score. Measured: the
  # exact score's loss 0.63, untrained 5.9, trained 0.71 (~5 s on a shared core);
  # the gap must shrink 5x and end below 0.2 (a third of the exact loss).
  import keras
  import tensorflow as tf

  from ncsn_tf import losses
  from ncsn_tf.data import toy

  keras.utils.set_random_seed(0)
  dist = toy.paper_mixture()
  ladder = tf.constant(np.geomspace(20.0, 0.01, 10).astype(np.float32))
  model = _continuous()
  optimizer = keras.optimizers.Adam(1e-3)
  loss_fn = losses.get_loss('continuous_dsm')   # sde None: the ladder's VE SDE
  x_eval = dist.sample(4096, [1, 2])

  def eval_loss(score_fn):
    return float(tf.reduce_mean(loss_fn(score_fn, x_eval, ladder, tf.constant([5, 6]))[0]))

  @tf.function
  def step(i):
    x = dist.sample(256, tf.stack([i, 7]))
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(loss_fn(model, x, ladder, tf.stack([i, 9]))[0])
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  exact = eval_loss(lambda y, sigma: dist.perturbed_score(y, sigma))
  before = eval_loss(model)
  for i in range(300):
    step(tf.constant(i))
  after = eval_loss(model)
  assert after - exact < 0.2 * (before - exact) and after - exact < 0.2, (before, after, exact)
