"""Annealed DSM against closed forms on a Gaussian, where everything is exact."""

import numpy as np
import tensorflow as tf

from ncsn_tf import losses


def test_dsm_target_is_the_conditional_score():
  # ∇_x̃ log N(x̃; x, σ²I) = −(x̃ − x)/σ², by autodiff of the Gaussian log-density.
  x = tf.constant([[0.5, -1.0]])
  perturbed = tf.constant([[1.5, 0.0]])
  sigma = 0.7
  with tf.GradientTape() as tape:
    tape.watch(perturbed)
    log_q = -tf.reduce_sum((perturbed - x)**2) / (2 * sigma**2)
  np.testing.assert_allclose(losses.dsm_target(perturbed, x, sigma), tape.gradient(log_q, perturbed),
                             rtol=1e-6)


def test_anneal_dsm_at_the_exact_score_equals_its_closed_form():
  # Data N(0, I_D): p_σ = N(0, (1+σ²) I), exact score −x̃/(1+σ²). DSM equals the
  # Fisher divergence plus E‖∇log q‖² − E‖∇log p_σ‖² (Vincent 2011), so at the
  # truth the level-i term is ½σ²(D/σ² − D/(1+σ²)) = ½ D/(1+σ²).
  # 200k examples: Monte Carlo std of each level's mean is ~1%; allow 4%.
  d = 3
  sigmas = tf.constant([4.0, 1.0, 0.25])
  x = tf.random.stateless_normal([200_000, d], [0, 1])

  def exact_score(perturbed, sigma_index):
    s = tf.gather(sigmas, sigma_index)[:, None]
    return -perturbed / (1.0 + s**2)

  loss, index = losses.anneal_dsm_per_example(exact_score, x, sigmas, seed=tf.constant([2, 3]))
  per_level, count = losses.per_sigma_mean(loss, index, 3)
  expected = 0.5 * d / (1.0 + sigmas.numpy()**2)
  np.testing.assert_allclose(per_level, expected, rtol=0.04)
  # Levels are drawn uniformly: each gets a third, within 4 binomial std.
  np.testing.assert_allclose(count / 200_000, 1 / 3, atol=4 * np.sqrt(2 / 9 / 200_000))


def test_the_exact_score_minimises_anneal_dsm():
  # Any other score (here scaled by 1.2 or 0.8) has a strictly larger loss for the same noise.
  sigmas = tf.constant([2.0, 0.5])
  x = tf.random.stateless_normal([50_000, 2], [4, 5])
  seed = tf.constant([6, 7])

  def scaled(c):
    return lambda p, i: -c * p / (1.0 + tf.gather(sigmas, i)[:, None]**2)

  exact = tf.reduce_mean(losses.anneal_dsm_per_example(scaled(1.0), x, sigmas, seed)[0])
  for c in (0.8, 1.2):
    other = tf.reduce_mean(losses.anneal_dsm_per_example(scaled(c), x, sigmas, seed)[0])
    assert other > exact


def test_anneal_dsm_is_deterministic_in_the_seed_and_works_on_images():
  sigmas = tf.constant([1.0, 0.1])
  x = tf.random.stateless_uniform([4, 8, 8, 3], [0, 0])
  zero = lambda p, i: tf.zeros_like(p)
  a = losses.anneal_dsm_per_example(zero, x, sigmas, tf.constant([1, 1]))
  b = losses.anneal_dsm_per_example(zero, x, sigmas, tf.constant([1, 1]))
  np.testing.assert_array_equal(a[0], b[0])
  # With a zero score the term is ½σ²‖z/σ‖² = ½‖z‖², about D/2 = 96 per example.
  assert a[0].shape == (4,) and np.all(np.abs(a[0].numpy() - 96) < 40)


def test_per_sigma_mean_handles_empty_levels():
  mean, count = losses.per_sigma_mean(tf.constant([1.0, 3.0]), tf.constant([0, 0]), 2)
  np.testing.assert_allclose(mean, [2.0, 0.0])
  np.testing.assert_allclose(count, [2.0, 0.0])


def test_lognormal_level_sampling_draws_edm_probabilities_and_keeps_each_level_term():
  # Ladder 8 -> 0.125 (7 levels, log-spaced by log 2); log σ ~ N(log 0.5, 1):
  # p_i ∝ exp(−(log σ_i − log 0.5)² / 2), written out with numpy.
  d = 3
  sigmas = np.geomspace(8.0, 0.125, 7).astype(np.float32)
  log_mean, log_std = np.log(0.5), 1.0
  p = np.exp(-(np.log(sigmas) - log_mean)**2 / (2 * log_std**2))
  p /= p.sum()
  logits = losses.lognormal_level_logits(sigmas, log_mean, log_std)
  x = tf.random.stateless_normal([200_000, d], [8, 9])

  def exact_score(perturbed, sigma_index):
    return -perturbed / (1.0 + tf.gather(sigmas, sigma_index)[:, None]**2)

  loss, index = losses.get_loss('anneal_dsm', level_logits=logits)(
      exact_score, x, tf.constant(sigmas), tf.constant([2, 3]))
  per_level, count = losses.per_sigma_mean(loss, index, 7)
  # Frequencies within 4 binomial standard deviations of p.
  assert np.all(np.abs(count / 200_000 - p) < 4 * np.sqrt(p * (1 - p) / 200_000))
  # Each drawn level's term is the uniform objective's: ½ D / (1 + σ²) at the
  # truth (closed form as above). The rarest level (p = 0.6%) has ~1.2k
  # examples, a Monte Carlo std of ~3% of its mean; allow 12%.
  np.testing.assert_allclose(per_level, 0.5 * d / (1.0 + sigmas**2), rtol=0.12)
