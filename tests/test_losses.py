"""Annealed DSM against closed forms on a Gaussian, where everything is exact."""

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import tensorflow as tf

from ncsn_tf import losses
from ncsn_tf import noise


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


# --- continuous-time DSM ------------------------------------------------------
#
# Data N(μ, s² I_D) again: the σ-perturbed score is −(y − μ)/(s² + σ²), and at
# a drawn σ the term at the exact score has expectation ½ D s²/(s² + σ²)
# (the annealed closed form above with unit variance replaced by s²).

_MU = np.array([3.0, -1.0], np.float32)
_S2 = 0.5
_LADDER = np.geomspace(20.0, 0.01, 10).astype(np.float32)


def _gaussian_data(n, seed):
  return tf.random.stateless_normal([n, 2], seed) * np.sqrt(_S2) + _MU


def _scaled_exact_score(c=1.0):
  return lambda y, sigma: -c * (y - _MU) / (_S2 + sigma[:, None]**2)


def _expected_within_standard_errors(loss, expected, k=4.0):
  # The mean of N i.i.d. terms: its Monte Carlo standard error from the sample itself.
  loss = np.asarray(loss, np.float64)
  error = loss.std() / np.sqrt(loss.size)
  assert abs(loss.mean() - expected) < k * error, (loss.mean(), expected, error)


def _vp_sigma2(kind, t):
  b = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
  alpha2 = np.exp(-b)
  std2 = 1.0 - alpha2 if kind == 'vp' else (1.0 - alpha2)**2
  return std2 / alpha2, b


def test_continuous_dsm_ve_at_the_exact_score_equals_its_closed_form():
  # log σ ~ U(a, b): E[s²/(s² + σ²)] = 1 − log((s² + σ_max²)/(s² + σ_min²)) / (2(b − a)),
  # since ∫ s²/(s² + e^{2u}) du = u − ½ log(s² + e^{2u}). 200k examples, 4 standard errors.
  d, smin, smax = 2, 0.01, 20.0
  expected = 0.5 * d * (1.0 - np.log((_S2 + smax**2) / (_S2 + smin**2)) / (2 * np.log(smax / smin)))
  x = _gaussian_data(200_000, [1, 2])
  loss, _ = losses.continuous_dsm_per_example(_scaled_exact_score(), x, _LADDER,
                                              tf.constant([3, 4]), sde=noise.VESDE(smin, smax))
  _expected_within_standard_errors(loss, expected)
  # sde=None is the ladder's VE SDE (σ_min, σ_max = the ladder's ends): the same draws.
  ladder_loss, _ = losses.continuous_dsm_per_example(_scaled_exact_score(), x, _LADDER,
                                                     tf.constant([3, 4]))
  np.testing.assert_allclose(ladder_loss, loss, rtol=1e-4)


@pytest.mark.parametrize('kind', ['vp', 'subvp'])
def test_continuous_dsm_vp_at_the_exact_score_equals_its_closed_form(kind):
  # t ~ U(ε, 1), σ(t)² = std²/α²: E = ½ D ∫ s²/(s² + σ(t)²) dt / (1 − ε), by quadrature;
  # with the likelihood weighting the integrand also carries g(t)²/std(t)² (written
  # out below). ε = 1e-3 there: the factor grows like 1/t, and at ε = 1e-5 the
  # terms' variance (∫ dt/t²) would need millions of examples for the same standard
  # error. 200k examples, 4 standard errors.
  sde = noise.VPSDE() if kind == 'vp' else noise.SubVPSDE()
  d = 2
  x = _gaussian_data(200_000, [5, 6])

  def term(t):
    return 0.5 * d * _S2 / (_S2 + _vp_sigma2(kind, t)[0])

  def likelihood_factor(t):
    _, b = _vp_sigma2(kind, t)
    beta = 0.1 + (20.0 - 0.1) * t
    if kind == 'vp':   # g² = β, std² = 1 − e^{−B}
      return beta / (1.0 - np.exp(-b))
    # g² = β(1 − e^{−2B}), std = 1 − e^{−B}
    return beta * (1.0 - np.exp(-2 * b)) / (1.0 - np.exp(-b))**2

  for weighting, eps, integrand in (('sigma2', 1e-5, term),
                                    ('likelihood', 1e-3, lambda t: likelihood_factor(t) * term(t))):
    integral, _ = scipy.integrate.quad(integrand, eps, 1.0, limit=200, points=[0.01, 0.1])
    loss, _ = losses.continuous_dsm_per_example(_scaled_exact_score(), x, _LADDER,
                                                tf.constant([7, 8]), sde=sde, eps=eps,
                                                weighting=weighting)
    _expected_within_standard_errors(loss, integral / (1 - eps))


@pytest.mark.parametrize('sde', [noise.VESDE(0.01, 20.0), noise.VPSDE()], ids=['ve', 'vp'])
def test_the_exact_score_minimises_continuous_dsm(sde):
  # Same draws (same seed) for every candidate: any other score has a strictly larger loss.
  x = _gaussian_data(50_000, [9, 10])
  seed = tf.constant([11, 12])
  mean = lambda c: float(tf.reduce_mean(losses.continuous_dsm_per_example(
      _scaled_exact_score(c), x, _LADDER, seed, sde=sde)[0]))
  exact = mean(1.0)
  assert mean(0.9) > exact and mean(1.1) > exact
  shifted = lambda y, sigma: _scaled_exact_score()(y, sigma) + 0.05
  assert float(tf.reduce_mean(losses.continuous_dsm_per_example(shifted, x, _LADDER, seed,
                                                                sde=sde)[0])) > exact


def _sigmas_seen(n, seed, **options):
  """The σ [N] the loss asks the network at, and the level index it returns."""
  seen = []

  def probe(y, sigma):
    seen.append(np.asarray(sigma))
    return tf.zeros_like(y)

  _, level = losses.continuous_dsm_per_example(probe, tf.zeros([n, 2]), _LADDER, tf.constant(seed),
                                               **options)
  return seen[0], np.asarray(level)


def test_continuous_dsm_draws_log_uniform_sigma_for_ve_and_uniform_t_for_vp():
  # KS tests at a fixed seed against U(log σ_min, log σ_max) and U(ε, 1): a
  # correct sampler fails one at this level once in 10,000 seeds, a wrong
  # distribution (e.g. σ uniform, or t over [0, 1] for VP) fails it surely at n = 20,000.
  sigma, _ = _sigmas_seen(20_000, [1, 1], sde=noise.VESDE(0.01, 20.0))
  a, b = np.log(0.01), np.log(20.0)
  assert scipy.stats.kstest(np.log(sigma), scipy.stats.uniform(a, b - a).cdf).pvalue > 1e-4
  assert sigma.min() >= 0.01 * (1 - 1e-5) and sigma.max() <= 20.0 * (1 + 1e-5)
  sde, eps = noise.VPSDE(), 1e-2
  sigma, _ = _sigmas_seen(20_000, [2, 2], sde=sde, eps=eps)
  t = np.asarray(sde.t_of_sigma(sigma), np.float64)
  assert scipy.stats.kstest(t, scipy.stats.uniform(eps, 1 - eps).cdf).pvalue > 1e-4


def test_truncated_lognormal_sigma_is_the_truncated_normal_quantile():
  # The inverse CDF at fixed u against scipy's truncnorm quantiles, an independent
  # closed form, for EDM's P_mean on [-1, 1] data (-1.2), that mean shifted to
  # data in [0, 1] (-1.9) and a mean above the range (its upper tail only).
  # The result is float32: rtol 1e-5 is a few of its ulps.
  u = (np.arange(5_000) + 0.5) / 5_000
  for m, s, lo, hi in [(-1.2, 1.2, 0.002, 80.0), (-1.9, 1.2, 0.01, 50.0), (5.0, 0.5, 0.01, 20.0)]:
    a, b = (np.log(lo) - m) / s, (np.log(hi) - m) / s
    expected = np.exp(scipy.stats.truncnorm.ppf(u, a, b, loc=m, scale=s))
    # u in float64: at the upper tail a float32 u's round-off alone moves σ by 5e-5.
    got = losses.truncated_lognormal_sigma(tf.constant(u, tf.float64), m, s, lo, hi).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  with pytest.raises(ValueError, match='log_std must be > 0'):
    losses.truncated_lognormal_sigma(u, 0.0, 0.0, 0.01, 1.0)


def test_continuous_dsm_draws_edm_lognormal_sigma_inside_the_ve_range():
  # KS at a fixed seed against the truncated normal of log σ (passes at 1e-4 but
  # once in 10,000 seeds) and against the paper's log-uniform, which these draws
  # must fail: n = 20,000 separates the two surely.
  sde, m, s = noise.VESDE(0.01, 20.0), -1.2, 1.2
  sigma, _ = _sigmas_seen(20_000, [1, 1], sde=sde, log_sigma_normal=(m, s))
  a, b = (np.log(0.01) - m) / s, (np.log(20.0) - m) / s
  log_sigma = np.log(sigma.astype(np.float64))
  assert scipy.stats.kstest(log_sigma, scipy.stats.truncnorm(a, b, loc=m, scale=s).cdf).pvalue > 1e-4
  uniform = scipy.stats.uniform(np.log(0.01), np.log(2000.0)).cdf
  assert scipy.stats.kstest(log_sigma, uniform).pvalue < 1e-10
  assert sigma.min() >= 0.01 * (1 - 1e-5) and sigma.max() <= 20.0 * (1 + 1e-5)
  # The time returned is the VE SDE's t(σ); the ladder's own VE SDE (sde=None) draws the same σ.
  x = tf.zeros([1_000, 2])
  t, drawn, _, _ = losses.continuous_noise_levels(x, _LADDER, tf.constant([2, 2]), sde=sde,
                                                  log_sigma_normal=(m, s))
  np.testing.assert_allclose(sde.sigma(t), drawn, rtol=1e-5)
  _, ladder_drawn, _, _ = losses.continuous_noise_levels(x, _LADDER, tf.constant([2, 2]),
                                                         log_sigma_normal=(m, s))
  np.testing.assert_allclose(ladder_drawn, drawn, rtol=1e-5)
  with pytest.raises(ValueError, match='applies to the VE SDE, got VPSDE'):
    losses.continuous_noise_levels(x, _LADDER, tf.constant([2, 2]), sde=noise.VPSDE(),
                                   log_sigma_normal=(m, s))


def test_continuous_dsm_edm_weighting_is_lambda_times_the_denoiser_error():
  # Karras et al. 2022, eq. 8 and table 1: λ(σ) ‖D − x‖² with λ = (σ² + σ_d²)/(σ σ_d)²
  # and D = x̃ + σ² s, computed here in float64 from the σ and z the loss drew (not
  # by the loss's own σ s + z form). The float32 loss cancels x̃ against σ² s at
  # σ = 20 to ~1e-5 relative: rtol 1e-4.
  sde, sigma_data = noise.VESDE(0.01, 20.0), 0.5
  x, seed = _gaussian_data(1_000, [4, 4]), tf.constant([5, 5])
  score_fn = _scaled_exact_score(0.9)
  loss, _ = losses.continuous_dsm_per_example(score_fn, x, _LADDER, seed, sde=sde,
                                              weighting='edm', sigma_data=sigma_data)
  _, sigma, z, _ = losses.continuous_noise_levels(x, _LADDER, seed, sde=sde)
  noisy = x + sigma[:, None] * z
  score = np.asarray(score_fn(noisy, sigma), np.float64)
  sigma, x64, noisy = (np.asarray(v, np.float64) for v in (sigma, x, noisy))
  denoised = noisy + sigma[:, None]**2 * score
  lam = (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2
  expected = 0.5 * lam * np.sum((denoised - x64)**2, axis=1)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  with pytest.raises(ValueError, match="weighting 'edm' needs sigma_data > 0"):
    losses.continuous_dsm_per_example(score_fn, x, _LADDER, seed, sde=sde, weighting='edm')


def test_continuous_dsm_level_index_is_the_nearest_level_in_log_sigma():
  sigma, level = _sigmas_seen(5_000, [3, 3], sde=noise.VPSDE())
  # VP's σ(t) runs from ~0.003 to ~150, beyond both ends of the ladder: nearest is the end.
  assert sigma.min() < _LADDER[-1] and sigma.max() > _LADDER[0]
  expected = np.argmin(np.abs(np.log(sigma)[:, None] - np.log(_LADDER)[None]), axis=1)
  np.testing.assert_array_equal(level, expected)
  assert level.dtype == np.int32 and set(level) == set(range(len(_LADDER)))


def test_continuous_dsm_likelihood_weighting_for_ve_is_a_constant_times_sigma2():
  # VE: g² = σ² · 2 log(σ_max/σ_min) and std = σ, so λ = g² is 2 log(2000) times λ = σ².
  sde = noise.VESDE(0.01, 20.0)
  x, seed = _gaussian_data(1_000, [4, 4]), tf.constant([5, 5])
  plain, _ = losses.continuous_dsm_per_example(_scaled_exact_score(0.9), x, _LADDER, seed, sde=sde)
  weighted, _ = losses.continuous_dsm_per_example(_scaled_exact_score(0.9), x, _LADDER, seed,
                                                  sde=sde, weighting='likelihood')
  np.testing.assert_allclose(weighted, 2 * np.log(2000.0) * plain, rtol=1e-5)


def test_continuous_dsm_is_deterministic_in_the_seed_and_works_on_images():
  x = tf.random.stateless_uniform([4, 8, 8, 3], [0, 0])
  zero = lambda p, sigma: tf.zeros_like(p)
  a = losses.continuous_dsm_per_example(zero, x, _LADDER, tf.constant([1, 1]), sde=noise.VPSDE())
  b = losses.continuous_dsm_per_example(zero, x, _LADDER, tf.constant([1, 1]), sde=noise.VPSDE())
  np.testing.assert_array_equal(a[0], b[0])
  # With a zero score the term is ½σ²‖z/σ‖² = ½‖z‖², about D/2 = 96 per example.
  assert a[0].shape == (4,) and a[1].shape == (4,) and np.all(np.abs(a[0].numpy() - 96) < 40)


def test_get_loss_registers_continuous_dsm_with_its_options():
  sde = noise.VPSDE()
  fn = losses.get_loss('continuous_dsm', sde=sde, eps=1e-3, weighting='likelihood',
                       level_logits=None, num_projections=4)  # the others are ignored
  assert fn.func is losses.continuous_dsm_per_example
  assert fn.keywords == dict(sde=sde, eps=1e-3, weighting='likelihood')
  assert losses.get_loss('continuous_dsm') is losses.continuous_dsm_per_example
  with pytest.raises(ValueError,
                     match=r"unknown weighting 'g2'; choose from \('sigma2', 'likelihood', 'edm'\)"):
    losses.get_loss('continuous_dsm', weighting='g2')
  with pytest.raises(ValueError, match='eps must be in'):
    losses.get_loss('continuous_dsm', eps=1.5)
  with pytest.raises(ValueError, match='continuous DSM needs 0 < eps < T'):
    losses.continuous_dsm_per_example(_scaled_exact_score(), tf.zeros([2, 2]), _LADDER,
                                      tf.constant([0, 0]), sde=sde, eps=0.0)
