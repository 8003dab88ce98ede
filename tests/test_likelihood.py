"""ncsn_tf/likelihood.py against densities known in closed form.

With the exact score the probability-flow ODE is the exact transport from
p_eps to p_T, so the model's log-density is

    log p_model(x) = log p_eps(x) + [log π(x_T) − log p_T(x_T)],

the data's own log-density plus the prior mismatch at the latent. The tests
either make the mismatch negligible (σ_max large, the prior centred at the
data mean) or compute it exactly, so that what is left is solver error.

Tolerances: DormandPrince at rtol = atol = 1e-5 keeps each step's local
error below ~1e-5 relative to the state (the latent reaches σ_max ~ 50-100,
the log-density integral ~10 nats); over 50-300 evaluations (8-50 steps) the
global error measured here is ~1e-4 nats typical and ~2e-3 at worst, and the
bounds below sit at least 3x above what was measured, so they catch a wrong sign, a
missing factor ½ or a dropped Jacobian term (all O(1) nats), not round-off.

Every solve is one tf.function trace (~2-6 s on one core); the score
functions are module-level objects so that tests sharing one reuse its trace.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from ncsn_tf import likelihood
from ncsn_tf import noise
from ncsn_tf.data import images
from ncsn_tf.data import toy

EPS = 1e-5  # log_likelihood's default start time.


def _t(value):
  return tf.constant([value], tf.float32)


# --- Gaussian data: the ODE map is affine, everything is closed form ------------

MU = np.array([1.0, -0.5], np.float32)
S = 0.7  # data N(MU, S² I)


def _gaussian_points():
  rng = np.random.default_rng(0)
  inside = MU + S * rng.normal(size=(32, 2))
  far = MU + S * np.array([[3.0, 0.0], [-2.5, 2.5], [0.0, -4.0]])  # the tails, where errors hide
  return tf.constant(np.concatenate([inside, far]), tf.float32)


def _gaussian_kernel(sde, t):
  """(mean, variance) of p_t = N(α μ, (α² s² + std²) I) for data N(μ, s² I)."""
  alpha, std = float(sde.mean_coeff(_t(t))[0]), float(sde.std(_t(t))[0])
  return alpha * MU, alpha**2 * S**2 + std**2


def _gaussian_score_fn(sde):
  def score_fn(x, t):
    alpha, std = sde.mean_coeff(t), sde.std(t)
    variance = alpha**2 * S**2 + std**2
    return -(x - alpha[:, None] * MU) / variance[:, None]
  return score_fn


def _gaussian_expected(sde, x):
  """(exact latent x_T, log p_eps(x), prior mismatch at x_T) for Gaussian data.

  Each coordinate's ODE map from p_eps to p_T is the affine
  x_T = m_T + (x − m_eps) sqrt(v_T / v_eps).
  """
  x = x.numpy().astype(np.float64)
  m_eps, v_eps = _gaussian_kernel(sde, EPS)
  m_end, v_end = _gaussian_kernel(sde, sde.T)
  latent = m_end + (x - m_eps) * np.sqrt(v_end / v_eps)
  log_p_eps = stats.multivariate_normal(m_eps, v_eps).logpdf(x)
  prior = stats.multivariate_normal(np.broadcast_to(sde.prior_mean, (2,)), sde.prior_std**2)
  mismatch = prior.logpdf(latent) - stats.multivariate_normal(m_end, v_end).logpdf(latent)
  return latent, log_p_eps, mismatch


VE_GAUSS = noise.VESDE(0.01, 50.0, prior_mean=MU)
VE_GAUSS_SCORE = _gaussian_score_fn(VE_GAUSS)


def test_gaussian_ve_exact_trace_is_the_exact_log_density():
  x = _gaussian_points()
  parts = likelihood.log_likelihood_parts(VE_GAUSS_SCORE, VE_GAUSS, x, exact_trace=True)
  latent, log_p_eps, mismatch = _gaussian_expected(VE_GAUSS, x)
  # The prior sits at the data mean, so p_T = N(μ, (s² + σ_max²) I) against
  # π = N(μ, σ_max² I): the mismatch is O(s²/σ_max²) = 2e-4 per coordinate
  # times (1 − z²) for a latent z standard deviations out (1.4e-3 at 4 s).
  assert np.max(np.abs(mismatch)) < 2e-3
  # The latent reaches ~150 at the far points: 1e-2 absolute is ~1e-4 relative
  # (measured 2.8e-3).
  np.testing.assert_allclose(parts.latent.numpy(), latent, atol=1e-2)
  # log N(x; μ, (s² + σ(eps)²) I) itself, within solver tolerance plus that small
  # mismatch, and the model's exact density (mismatch included) tighter: the
  # solver alone, measured 2.2e-4 at most (and 1.6e-3 with the mismatch).
  np.testing.assert_allclose(parts.log_prob.numpy(), log_p_eps, atol=5e-3)
  np.testing.assert_allclose(parts.log_prob.numpy(), log_p_eps + mismatch, atol=1e-3)
  np.testing.assert_array_equal(parts.log_prob_stderr.numpy(), 0.0)  # Exact: no estimate.
  # log_likelihood is the same numbers without the parts.
  log_prob, nfe = likelihood.log_likelihood(VE_GAUSS_SCORE, VE_GAUSS, x, exact_trace=True)
  np.testing.assert_array_equal(log_prob.numpy(), parts.log_prob.numpy())
  assert nfe.dtype == tf.int32 and 20 < int(nfe) < 1000


def test_rademacher_probes_are_exact_for_a_diagonal_jacobian():
  # Isotropic Gaussian data: the drift's Jacobian is a multiple of I, and a
  # Rademacher probe's ε^T J ε = Σ J_ii ε_i² = tr J exactly (ε_i² = 1).
  x = _gaussian_points()
  _, log_p_eps, mismatch = _gaussian_expected(VE_GAUSS, x)
  for probes in (1, 3):  # and so is their average
    log_prob, _ = likelihood.log_likelihood(VE_GAUSS_SCORE, VE_GAUSS, x, seed=[4, 2],
                                            hutchinson_probes=probes)
    np.testing.assert_allclose(log_prob.numpy(), log_p_eps + mismatch, atol=1e-3)


def test_gaussian_vp_exact_trace_is_the_exact_log_density_plus_the_prior_mismatch():
  vp = noise.VPSDE()
  x = _gaussian_points()
  parts = likelihood.log_likelihood_parts(_gaussian_score_fn(vp), vp, x, exact_trace=True)
  latent, log_p_eps, mismatch = _gaussian_expected(vp, x)
  # VP's prior N(0, I) is off p_T = N(α(1) μ, ...) by α(1) μ = 0.0066 μ: up
  # to ~0.02 nats at these points, computed exactly here rather than hidden.
  assert 1e-3 < np.max(np.abs(mismatch)) < 0.05
  np.testing.assert_allclose(parts.latent.numpy(), latent, atol=2e-3)  # measured 4.7e-4
  # Measured 1.8e-3 at most (48 evaluations: fewer, larger steps than VE's 156).
  np.testing.assert_allclose(parts.log_prob.numpy(), log_p_eps + mismatch, atol=6e-3)


# --- The paper's mixture and the rings: TFP's exact perturbed log_prob -------------

MIXTURE = toy.paper_mixture()
# Centred at the data mean 0.2·(−5) + 0.8·5 = 3 and σ_max = 100: p_T is the
# mixture with covariance I + 100² I, whose spread beyond π = N(3, 100² I) is
# the between-mode covariance (16 per coordinate): log π − log p_T is ~1e-3 at
# typical latents. With score_sde's prior at 0 and σ_max = 20 it is 0.18 nats
# per point on average (measured; docs/likelihood.md), which is the prior, not the solver.
VE_MIXTURE = noise.VESDE(0.01, 100.0, prior_mean=3.0)


def mixture_score(x, t):
  return MIXTURE.perturbed_score(x, VE_MIXTURE.sigma(t))


def _mixture_points():
  between = tf.constant([[0.0, 0.0], [-2.0, -3.0], [2.5, 1.0]], tf.float32)  # low density
  return tf.concat([MIXTURE.sample(125, seed=[0, 1]), between], 0)


@pytest.fixture(scope='module')
def mixture_exact():
  x = _mixture_points()
  return x, likelihood.log_likelihood_parts(mixture_score, VE_MIXTURE, x, exact_trace=True)


def test_mixture_matches_tfp_log_prob_of_p_sigma_min(mixture_exact):
  x, parts = mixture_exact
  sigma_eps = float(VE_MIXTURE.sigma(_t(EPS))[0])  # σ(eps) = σ_min (1 + 1e-4): the density at eps
  exact = MIXTURE.perturbed_log_prob(x, sigma_eps).numpy()
  error = np.abs(parts.log_prob.numpy() - exact)
  # Measured mean 1.4e-3, max 8e-3 (a far latent, where the prior mismatch grows).
  assert error.mean() < 5e-3 and error.max() < 0.06
  # With the exact p_T at the end in place of the prior, only the solver is
  # left: measured mean 5e-5, max 1.5e-3.
  solver_only = parts.delta_log_prob.numpy() + MIXTURE.perturbed_log_prob(
      parts.latent, VE_MIXTURE.sigma_max).numpy()
  error = np.abs(solver_only - exact)
  assert error.mean() < 2e-4 and error.max() < 4e-3


RINGS = toy.Rings()
# The rings are centred at 0, so score_sde's prior mean 0 is the data mean;
# E‖x‖²/2 ≈ 7 per coordinate against σ_max² = 1e4 leaves ~1e-3 of mismatch.
VE_RINGS = noise.VESDE(0.01, 100.0)


def rings_score(x, t):
  return RINGS.perturbed_score(x, VE_RINGS.sigma(t))


def test_rings_match_tfp_log_prob_of_p_sigma_min():
  # Non-Gaussian: the Rice density's score is the closed form of toy.Rings.
  x = tf.concat([RINGS.sample(100, seed=[0, 2]), tf.constant([[0.0, 0.0], [3.2, 0.0]])], 0)
  parts = likelihood.log_likelihood_parts(rings_score, VE_RINGS, x, exact_trace=True)
  exact = RINGS.perturbed_log_prob(x, VE_RINGS.sigma(_t(EPS))).numpy()
  error = np.abs(parts.log_prob.numpy() - exact)
  assert error.mean() < 2e-3 and error.max() < 0.01  # measured 4.5e-4, 2.2e-3
  solver_only = parts.delta_log_prob.numpy() + RINGS.perturbed_log_prob(
      parts.latent, VE_RINGS.sigma_max).numpy()
  error = np.abs(solver_only - exact)
  assert error.mean() < 2e-4 and error.max() < 4e-3  # measured 2.5e-5, 8.3e-4


# --- Hutchinson: unbiased against the exact trace --------------------------------


@pytest.mark.parametrize('probe, probes', [('rademacher', 1), ('gaussian', 1), ('gaussian', 4)])
def test_hutchinson_is_unbiased(mixture_exact, probe, probes):
  x, exact_parts = mixture_exact
  points = [0, 1, 125, 126]  # two draws and two points between the modes
  copies = 256
  # Every row of one batch draws its own probe, so 256 copies of a point are
  # 256 independent estimates from a single solve.
  batch = tf.repeat(tf.gather(x, points), copies, axis=0)
  # With 4 probes a missing division by K would be a 4x bias, far outside.
  parts = likelihood.log_likelihood_parts(mixture_score, VE_MIXTURE, batch, seed=[7, 11],
                                          probe=probe, hutchinson_probes=probes)
  estimates = parts.log_prob.numpy().reshape(len(points), copies)
  mean = estimates.mean(axis=1)
  standard_error = estimates.std(axis=1, ddof=1) / np.sqrt(copies)
  exact = exact_parts.log_prob.numpy()[points]
  # The mixture's Hessian has off-diagonal terms along (1, 1) (the two modes),
  # so even Rademacher probes have a spread to average (measured SE 0.007-1.5
  # nats, largest between the modes; Gaussian probes 0.5-1.7).
  assert np.all(standard_error > 1e-3)
  # 3 standard errors, plus 1e-3 for the solver: the Hutchinson solve takes
  # its own step sizes (the error norm includes the log-density), so its
  # path differs from the exact-trace one at the solver tolerance.
  np.testing.assert_array_less(np.abs(mean - exact), 3.0 * standard_error + 1e-3)
  # Each example's own standard error (the spread of its K probes' integrals) against the
  # spread of 256 independent estimates of the same point: their RMS within 25% of it (the
  # observed spread is known to ±4.4% from 256 copies; each reported error has K − 1 = 3
  # degrees of freedom, ±8% for the mean of 256 squares). One probe reports NaN: no spread.
  reported = parts.log_prob_stderr.numpy().reshape(len(points), copies)
  if probes == 1:
    assert np.all(np.isnan(reported))
  else:
    ratio = np.sqrt(np.mean(reported**2, axis=1)) / estimates.std(axis=1, ddof=1)
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio


# --- Bits per dimension ------------------------------------------------------------


def test_uniform_density_on_the_unit_cube_is_exactly_8_bits():
  dims = 3 * 4 * 4
  # Uniform on [0, 1)^D in the data's own range (a = 1): log p = 0.
  bpd = likelihood.bits_per_dim(tf.zeros([5]), dims)
  np.testing.assert_array_equal(bpd.numpy(), np.full(5, 8.0, np.float32))
  # The same density seen in score_sde's centred range x = 2y − 1: uniform on
  # [−1, 1)^D has log p_x = −D log 2, and the Jacobian's D log 2 puts it back.
  bpd = likelihood.bits_per_dim(tf.fill([5], -dims * np.log(2.0)), dims, data_scale=2.0,
                                data_shift=-1.0)
  np.testing.assert_allclose(bpd.numpy(), 8.0, rtol=0, atol=1e-6)
  assert likelihood.UNIFORM_BPD == 8.0


def test_uniform_density_through_the_pipelines_logit_transform_is_8_bits():
  # y uniform on [0, 1)^D seen in logit space: p_x(x) = 1/|dx/dy|, the
  # derivative taken by autodiff of the pipeline's own images.logit_transform,
  # so the log-det in bits_per_dim is checked against the exact map used.
  y = tf.constant(np.random.default_rng(1).uniform(size=(6, 2, 2, 3)), tf.float32)
  y = tf.concat([y, tf.constant([0.0, 1.0 - 1e-7, 0.5], tf.float32)[None, None, None, :]
                 * tf.ones([1, 2, 2, 3])], 0)  # the extremes, where the log-det is ~14
  with tf.GradientTape() as tape:
    tape.watch(y)
    x = images.logit_transform(y)  # elementwise, so the gradient of the sum is dx_i/dy_i
    total = tf.reduce_sum(x)
  derivative = tape.gradient(total, y)
  log_prob_x = -tf.reduce_sum(tf.math.log(tf.cast(derivative, tf.float64)), axis=[1, 2, 3])
  bpd = likelihood.bits_per_dim(log_prob_x, 12, logit_alpha=images.LOGIT_LAMBDA, x_model=x)
  # float32 logits near ±13.8 carry ~1e-6 relative error into the log-det.
  np.testing.assert_allclose(bpd.numpy(), 8.0, rtol=0, atol=1e-5)


def test_gaussian_model_bits_per_dim_by_hand():
  # N(0, I) in score_sde's centred range x = 2y − 1, D = 3, at x = (0.5, −0.2, 0.1):
  #   log p = −(0.25 + 0.04 + 0.01)/2 − (3/2) log 2π = −2.906815599614018
  #   bpd = −(log p + 3 log 2 − 3 log 256)/(3 log 2) = 7 + 2.906815599614018/(3 log 2)
  #       = 8.397882816780607.
  x = np.array([[0.5, -0.2, 0.1]])
  log_prob = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(x)
  np.testing.assert_allclose(log_prob, -2.906815599614018, rtol=1e-12)
  bpd = likelihood.bits_per_dim([log_prob], 3, data_scale=2.0, data_shift=-1.0)
  np.testing.assert_allclose(bpd.numpy(), [8.397882816780607], rtol=1e-6)
  # score_sde's `7 - inverse_scaler(-1.)` (inverse_scaler(x) = (x + 1)/2 here) agrees.
  np.testing.assert_allclose(-log_prob / (3 * np.log(2.0)) + 7.0 - (-1.0 + 1.0) / 2.0,
                             bpd.numpy(), rtol=1e-6)
  # Uncentred (x = y, a = 1): score_sde's offset is 7 − (−1) = 8, and so is ours.
  np.testing.assert_allclose(likelihood.bits_per_dim([log_prob], 3).numpy(),
                             -log_prob / (3 * np.log(2.0)) + 8.0, rtol=1e-6)


def _baseline_expected(cov_y):
  """8 + H/(D log 2), H = ½ log det(2πe S): a Gaussian's expected bpd on its own data."""
  dims = len(cov_y)
  entropy = 0.5 * (dims * np.log(2 * np.pi * np.e) + np.linalg.slogdet(cov_y)[1])
  return 8.0 + entropy / (dims * np.log(2.0))


def test_gaussian_baseline_against_its_entropy():
  rng = np.random.default_rng(3)
  dims = 4
  # y = (k + u)/256 has Var = Var(k)/256² + 1/(12·256²) per pixel, Var(k) = (256² − 1)/12
  # for k uniform on 0..255.
  between, within = (256.0**2 - 1) / (12 * 256.0**2), 1.0 / (12 * 256.0**2)
  # Independent uniform pixels: S = I/12, and the Gaussian pays ½ log2(2πe/12) = 0.255 bits
  # over the uniform's 8 (the uniform is the maximum-entropy density on the cube).
  independent = rng.integers(0, 256, size=(25_000, 2, 2, 1), dtype=np.uint8)
  bpd = likelihood.gaussian_baseline_bpd(independent[:20_000], independent[20_000:], seed=1)
  expected = _baseline_expected((between + within) * np.eye(dims))
  np.testing.assert_allclose(expected, 8.0 + 0.5 * np.log2(2 * np.pi * np.e / 12), rtol=1e-12)
  # 5,000 test images with a per-image spread of ~0.2 bits: standard error ~3e-3.
  assert bpd.shape == (5_000,) and abs(bpd.mean() - expected) < 0.015
  # The fitted Gaussian moves with an affine map of the data: the same bits/dim.
  centred = likelihood.gaussian_baseline_bpd(independent[:20_000], independent[20_000:],
                                             data_scale=2.0, data_shift=-1.0, seed=1)
  np.testing.assert_allclose(centred, bpd, rtol=0, atol=1e-4)
  # Four copies of one pixel: S = between·11^T + within·I, mostly learnable.
  same = np.repeat(rng.integers(0, 256, size=(25_000, 1, 1, 1), dtype=np.uint8), dims, axis=1)
  bpd = likelihood.gaussian_baseline_bpd(same[:20_000], same[20_000:], seed=2)
  expected = _baseline_expected(between * np.ones((dims, dims)) + within * np.eye(dims))
  assert 2.0 < expected < 3.0 and abs(bpd.mean() - expected) < 0.015
  # In logit space: a different, still finite, baseline (its own Gaussian fit).
  logit = likelihood.gaussian_baseline_bpd(independent[:20_000], independent[20_000:],
                                           logit_alpha=images.LOGIT_LAMBDA, seed=1)
  assert np.all(np.isfinite(logit)) and logit.mean() > 8.0


# --- Bad input: one-line ValueError before any work -----------------------------


def _one_line_error(fn, match):
  with pytest.raises(ValueError, match=match) as error:
    fn()
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('kwargs, match', [
    (dict(rtol=0.0), 'rtol must be > 0'),
    (dict(atol=-1e-5), 'atol must be > 0'),
    (dict(eps=0.0), r'eps must be in \(0, T=1\)'),
    (dict(eps=1.0), r'eps must be in \(0, T=1\)'),
    (dict(hutchinson_probes=0), 'hutchinson_probes must be an integer >= 1'),
    (dict(hutchinson_probes=1.5), 'hutchinson_probes must be an integer >= 1'),
    (dict(probe='normal'), "unknown Hutchinson probe 'normal'"),
    (dict(seed=None), 'needs a seed'),
])
def test_bad_settings_are_one_line_errors(kwargs, match):
  arguments = dict(seed=[0, 0])
  arguments.update(kwargs)
  x = tf.zeros([2, 2])
  _one_line_error(lambda: likelihood.log_likelihood(mixture_score, VE_MIXTURE, x, **arguments),
                  match)


def test_other_bad_input_is_one_line_errors():
  score = lambda x, t: -x  # noqa: E731  (never called: the checks come first)
  _one_line_error(lambda: likelihood.log_likelihood(score, VE_RINGS, tf.zeros([3]),
                                                    exact_trace=True), 'known data axes')
  _one_line_error(lambda: likelihood.log_likelihood(score, VE_RINGS, tf.zeros([1, 65]),
                                                    exact_trace=True), '65 dimensions is over 64')
  _one_line_error(lambda: likelihood.bits_per_dim([0.0], 0), 'num_dims must be an integer >= 1')
  _one_line_error(lambda: likelihood.bits_per_dim([0.0], 2, data_scale=0.0),
                  'data_scale must be nonzero')
  _one_line_error(lambda: likelihood.bits_per_dim([0.0], 2, logit_alpha=1e-6), 'pass x_model')
  _one_line_error(lambda: likelihood.bits_per_dim([0.0], 2, logit_alpha=0.5, x_model=[[0.0, 0.0]]),
                  r'logit_alpha must be in \(0, 0.5\)')
  _one_line_error(lambda: likelihood.gaussian_baseline_bpd(np.full([10, 2], 256), np.zeros([2, 2])),
                  '8-bit integer values')
  _one_line_error(lambda: likelihood.gaussian_baseline_bpd(np.zeros([4, 2, 2]),
                                                           np.zeros([2, 2, 2])),
                  r'more training images \(4\) than dimensions \(4\)')
  _one_line_error(lambda: likelihood.draw_probes([2, 2], 1, 'laplace', [0, 0]),
                  'unknown Hutchinson probe')
