"""Toy distributions against independent closed forms and autodiff."""

import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf.data import toy


def _random_mixture(rng, k=3, d=2):
  a = rng.normal(size=(k, d, d))
  covariances = a @ np.transpose(a, (0, 2, 1)) + 0.3 * np.eye(d)
  weights = rng.dirichlet(np.ones(k))
  means = rng.normal(scale=3.0, size=(k, d))
  return toy.GaussianMixture(weights, means, covariances)


def _autodiff_score(log_prob, x):
  x = tf.convert_to_tensor(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    lp = log_prob(x)
  return tape.gradient(lp, x)


def test_paper_mixture_is_the_papers():
  gmm = toy.paper_mixture()
  np.testing.assert_allclose(gmm.weights, [0.2, 0.8])
  np.testing.assert_allclose(gmm.means, [[-5, -5], [5, 5]])
  np.testing.assert_allclose(gmm.covariances, [np.eye(2)] * 2)


def test_mixture_score_equals_autodiff_of_tfp_log_prob():
  # Closed-form responsibilities vs autodiff through TFP's exact log_prob;
  # float32 agreement to 1e-4 relative.
  gmm = _random_mixture(np.random.default_rng(0))
  x = gmm.sample(256, seed=[1, 2]) + tf.random.stateless_normal([256, 2], [3, 4])
  np.testing.assert_allclose(gmm.score(x), _autodiff_score(gmm.log_prob, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('sigma', [0.3, 1.0, 4.0])
def test_perturbed_score_equals_autodiff_of_perturbed_mixture(sigma):
  gmm = _random_mixture(np.random.default_rng(1))
  x = tf.random.stateless_normal([128, 2], [5, 6]) * 4.0
  expected = _autodiff_score(gmm.distribution(sigma).log_prob, x)
  np.testing.assert_allclose(gmm.perturbed_score(x, sigma), expected, rtol=1e-4, atol=1e-4)


def test_perturbed_score_matches_monte_carlo_over_the_clean_data():
  # ∇ log p_σ(x) = E_{y~p}[N(x; y, σ²) (y − x)/σ²] / E_{y~p}[N(x; y, σ²)]:
  # a self-normalised Monte Carlo estimate over 400k clean samples, independent
  # of the closed form. With σ = 2 the weights are well spread, so the relative
  # error of the estimate is about 1e-2; we allow 5e-2.
  gmm = toy.paper_mixture()
  sigma = 2.0
  y = gmm.sample(400_000, seed=[7, 8]).numpy().astype(np.float64)
  x = np.array([[-5.0, -5.0], [0.0, 0.0], [3.0, 4.0], [-2.0, 1.0]])
  log_w = -np.sum((x[:, None, :] - y[None])**2, -1) / (2 * sigma**2)
  w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
  mc = np.einsum('nm,nmd->nd', w, (y[None] - x[:, None, :]) / sigma**2) / w.sum(1, keepdims=True)
  exact = gmm.perturbed_score(x.astype(np.float32), sigma).numpy()
  np.testing.assert_allclose(exact, mc, rtol=5e-2, atol=2e-2)


def test_per_example_sigmas():
  gmm = toy.paper_mixture()
  x = tf.constant([[1.0, 2.0], [1.0, 2.0]])
  both = gmm.perturbed_score(x, tf.constant([0.5, 3.0])).numpy()
  np.testing.assert_allclose(both[0], gmm.perturbed_score(x[:1], 0.5)[0], rtol=1e-6)
  np.testing.assert_allclose(both[1], gmm.perturbed_score(x[:1], 3.0)[0], rtol=1e-6)


def test_mixture_samples_have_the_right_weights_and_moments():
  gmm = toy.paper_mixture()
  x = gmm.sample(20_000, seed=[0, 1]).numpy()
  upper = x[:, 0] > 0
  # Binomial std of the share: sqrt(0.16 / 20000) = 0.003; allow 4 std.
  assert abs(upper.mean() - 0.8) < 0.012
  np.testing.assert_allclose(x[upper].mean(0), [5, 5], atol=0.05)
  np.testing.assert_allclose(np.cov(x[upper].T), np.eye(2), atol=0.06)


def test_sampling_is_deterministic_in_the_seed():
  gmm = toy.paper_mixture()
  np.testing.assert_array_equal(gmm.sample(10, seed=[3, 4]), gmm.sample(10, seed=[3, 4]))
  assert not np.array_equal(gmm.sample(10, seed=[3, 4]), gmm.sample(10, seed=[3, 5]))


def test_banana_score_equals_autodiff_and_density_normalises():
  banana = toy.Banana()
  x = banana.sample(512, seed=[1, 1])
  np.testing.assert_allclose(banana.score(x), _autodiff_score(banana.log_prob, x),
                             rtol=1e-4, atol=1e-4)
  # ∫ p = 1 on a fine grid (Riemann sum); the box holds all but ~1e-3 of the mass.
  axis = np.linspace(-12, 12, 481, dtype=np.float32)
  xx, yy = np.meshgrid(axis, axis)
  grid = np.stack([xx.ravel(), yy.ravel()], -1)
  mass = np.exp(banana.log_prob(grid).numpy()).sum() * (axis[1] - axis[0])**2
  assert abs(mass - 1.0) < 5e-3
  assert not banana.has_perturbed_score


def test_invalid_mixtures_raise():
  with pytest.raises(ValueError):
    toy.GaussianMixture([0.5, 0.6], [[0, 0], [1, 1]], [np.eye(2)] * 2)
  with pytest.raises(np.linalg.LinAlgError):
    toy.GaussianMixture([1.0], [[0, 0]], [-np.eye(2)])
  with pytest.raises(ValueError, match='unknown toy'):
    toy.get_toy('nope')


def test_toy_dataset_resumes_at_a_batch_and_differs_per_pipeline():
  gmm = toy.paper_mixture()
  full = list(toy.toy_dataset(gmm, batch_size=4, seed=3).take(5).as_numpy_iterator())
  resumed = list(toy.toy_dataset(gmm, batch_size=4, seed=3, start_batch=3).take(2).as_numpy_iterator())
  np.testing.assert_array_equal(full[3], resumed[0])
  np.testing.assert_array_equal(full[4], resumed[1])
  other = next(iter(toy.toy_dataset(gmm, batch_size=4, seed=3,
                                    input_context=tf.distribute.InputContext(2, 1, 2))))
  assert not np.array_equal(other.numpy(), full[0])
