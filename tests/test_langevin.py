"""Langevin samplers against closed forms."""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.data import toy
from ncsn_tf.sampling import langevin


def test_step_sizes_follow_the_official_rule():
  ladder = np.array([1.0, 0.1, 0.01], np.float32)
  np.testing.assert_allclose(langevin.langevin_step_size(2e-5, ladder), 2e-5 * np.array([1e4, 1e2, 1]),
                             rtol=1e-5)


def test_plain_langevin_reaches_the_discretised_stationary_law_of_a_gaussian():
  # For target N(0, 1) the update x' = (1 − ε) x + sqrt(2ε) z is linear, with
  # stationary variance 2/(2 − ε) exactly (and mean 0). ε = 0.2 gives 1.1111;
  # 20k chains: the variance estimate has std ~0.011; allow 0.04.
  eps = 0.2
  x0 = tf.random.stateless_uniform([20_000, 1], [0, 1], -3, 3)
  x = langevin.langevin_dynamics(lambda x: -x, x0, step_size=eps, n_steps=200, seed=[1, 2]).numpy()
  assert abs(x.mean()) < 0.03
  assert abs(x.var() - 2 / (2 - eps)) < 0.04


def test_annealed_langevin_with_the_exact_score_recovers_the_mixture():
  # Exact perturbed scores of the paper's mixture, annealed from σ = 20 to 0.5.
  # step_lr = 0.05 σ_L² keeps every level's step at ≤ 5% of that level's
  # variance (ε_i/(1+σ_i²) = 0.05 σ_i²/(1+σ_i²)), where the Langevin
  # discretisation bias is small. The final law is p_0.5: covariance 1.25 I per
  # mode (+0.5% bias), weights 0.2 / 0.8. 6000 chains: weight std 0.005, allow
  # 0.025; mean std ~0.03, allow 0.1; covariance entries allow 0.12.
  gmm = toy.paper_mixture()
  ladder = noise.geometric_sigmas(20.0, 0.5, 10)
  score = lambda x, i: gmm.perturbed_score(x, tf.gather(ladder, i))
  x0 = tf.random.stateless_uniform([6000, 2], [3, 4], -8, 8)
  x = langevin.annealed_langevin_dynamics(score, x0, ladder, n_steps_each=100,
                                          step_lr=0.05 * 0.5**2, seed=[5, 6]).numpy()
  upper = x[:, 0] > 0
  assert abs(upper.mean() - 0.8) < 0.025
  for mask, mean in ((upper, [5, 5]), (~upper, [-5, -5])):
    np.testing.assert_allclose(x[mask].mean(0), mean, atol=0.1)
    np.testing.assert_allclose(np.cov(x[mask].T), 1.25 * np.eye(2), atol=0.12)


def test_plain_langevin_gets_the_weights_wrong():
  # Section 3.2 of the paper: from uniform starts, plain Langevin with the exact
  # score keeps the 50/50 split of the starting points instead of 0.2/0.8.
  gmm = toy.paper_mixture()
  x0 = tf.random.stateless_uniform([4000, 2], [7, 8], -8, 8)
  x = langevin.langevin_dynamics(gmm.score, x0, step_size=0.05, n_steps=1000, seed=[1, 1]).numpy()
  assert abs((x[:, 0] > 0).mean() - 0.8) > 0.2


def test_trajectory_snapshots_and_determinism():
  ladder = np.array([2.0, 1.0], np.float32)
  score = lambda x, i: -x
  x0 = tf.zeros([5, 3])
  a, traj = langevin.annealed_langevin_dynamics(score, x0, ladder, n_steps_each=10, step_lr=0.01,
                                                seed=[0, 9], num_snapshots=4)
  b = langevin.annealed_langevin_dynamics(score, x0, ladder, n_steps_each=10, step_lr=0.01,
                                          seed=[0, 9])
  assert traj.shape == (4, 5, 3)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(traj[-1], a)
  assert not np.array_equal(traj[0], traj[-1])


def test_denoise_applies_tweedie_at_the_last_level():
  # With the score −x/(1+σ²) of N(0, I)+noise, one denoising step from x gives
  # x − σ_L² x/(1+σ_L²) = x/(1+σ_L²).
  ladder = np.array([0.5], np.float32)
  x0 = tf.ones([2, 2])
  score = lambda x, i: -x / (1 + 0.25)
  plain = langevin.annealed_langevin_dynamics(score, x0, ladder, n_steps_each=1, step_lr=1e-12,
                                              seed=[0, 0])
  denoised = langevin.annealed_langevin_dynamics(score, x0, ladder, n_steps_each=1,
                                                 step_lr=1e-12, seed=[0, 0], denoise=True)
  np.testing.assert_allclose(denoised, plain / 1.25, rtol=1e-5)


def test_langevin_update_is_x_plus_eps_score_plus_scaled_noise():
  rng = np.random.default_rng(0)
  x, s, z = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3))
  eps = 2e-5 * 100.0
  np.testing.assert_allclose(langevin.langevin_update(x, s, eps, z).numpy(),
                             x + eps * s + np.sqrt(2 * eps) * z, rtol=1e-5, atol=1e-6)


def test_the_paper_model_can_be_sampled_twice_at_batch_32():
  """Regression: the sampler's second call failed with AlreadyExistsError.

  With the CIFAR-10 model at batch >= 32, grappler turned the three-term update
  x + ε s + sqrt(2ε) z into a TemporaryVariable accumulation whose name repeated
  across calls (see `langevin.langevin_update`). Smaller models or batches do
  not trigger the rewrite, hence the full-size network here.
  """
  from ncsn_tf.models.refinenet import CondRefineNetDilated
  model = CondRefineNetDilated(128, 10, 32, 3).build_for()
  score_fn = lambda x, i: model(x, i)  # One callable: one trace for both calls.
  x = tf.random.stateless_uniform([32, 32, 32, 3], [0, 1])
  sigmas = noise.geometric_sigmas(1.0, 0.01, 10)[:1]
  for call in range(2):
    out = langevin.annealed_langevin_dynamics(score_fn, x, sigmas, n_steps_each=1, step_lr=2e-5,
                                              seed=[0, call])
    assert np.all(np.isfinite(out.numpy()))
