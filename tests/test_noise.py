"""ncsn_tf/noise/sde.py against closed forms and a Monte Carlo simulation of each forward SDE."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from ncsn_tf import noise

SDES = {
    've': lambda: noise.VESDE(sigma_min=0.1, sigma_max=10.0),
    'vp': lambda: noise.VPSDE(),
    'subvp': lambda: noise.SubVPSDE(),
}


@tf.function
def _euler_maruyama_forward(sde, x0, checkpoints, num_steps, seed):
  """Simulates dx = f dt + g dw from x(0) = x0 [M, 1]; returns x at `checkpoints` [K, M, 1]."""
  dt = 1.0 / num_steps
  x, states = x0, []
  step = 0
  for stop in checkpoints:  # Python ints: one while loop per segment.
    def body(i, x):
      t = tf.fill([tf.shape(x)[0]], tf.cast(i, tf.float32) * dt)  # left point of the step
      drift, diffusion = sde.sde(x, t)
      z = tf.random.stateless_normal(tf.shape(x), tf.random.experimental.stateless_fold_in(seed, i))
      return i + 1, x + drift * dt + diffusion[:, None] * np.sqrt(dt) * z
    _, x = tf.while_loop(lambda i, x: i < stop, body, (tf.constant(step), x))
    step = stop
    states.append(x)
  return tf.stack(states)


@pytest.mark.parametrize('name', sorted(SDES))
def test_perturbation_kernel_matches_a_monte_carlo_simulation_of_the_forward_sde(name):
  """x_t | x_0 ~ N(α x0, std² − α² std(0)²) from a fixed x0 (std(0) = σ_min for VE, 0 else).

  VE's marginal std is σ(t) (score_sde's convention: x_0 already carries
  σ_min noise), so started from a point the simulated variance is σ² − σ_min².
  Tolerances: 5 Monte Carlo standard errors (M = 20000: mean sd/sqrt(M),
  variance var·sqrt(2/M) = 1%) plus the Euler-Maruyama bias at h = 1/2000,
  first order in h: VE's left-point sum of g² = 2c σ² dt with c = log 100
  is low by ≈ c h = 0.23%; VP's mean factor carries ≈ h ∫β²/8 = 0.8% in log α.
  """
  sde = SDES[name]()
  num_samples, num_steps = 20000, 2000
  x0_value = 1.5
  x0 = tf.fill([num_samples, 1], x0_value)
  checkpoints = [500, 1000, 2000]
  states = _euler_maruyama_forward(sde, x0, checkpoints, num_steps, tf.constant([7, 11])).numpy()
  times = np.array(checkpoints, np.float32) / num_steps
  alpha = sde.mean_coeff(times).numpy()
  kernel_var = sde.std(times).numpy()**2 - alpha**2 * sde.std([0.0]).numpy()**2
  mean_expected, _ = sde.marginal(tf.fill([3, 1], x0_value), times)
  for k in range(len(times)):
    sample = states[k, :, 0]
    sd = np.sqrt(kernel_var[k])
    mean_tol = 5 * sd / np.sqrt(num_samples) + 0.01 * abs(alpha[k] * x0_value)
    np.testing.assert_allclose(sample.mean(), mean_expected[k, 0], atol=mean_tol)
    np.testing.assert_allclose(sample.var(), kernel_var[k],
                               rtol=5 * np.sqrt(2 / num_samples) + 0.005)


def test_closed_forms_of_the_coefficients():
  """σ(t), α(t), std(t), g(t) against the formulas of Song et al. (2021), appendix B, in float64."""
  t = np.array([1e-3, 0.2, 0.7, 1.0])
  ve = noise.VESDE(0.01, 50.0)
  sigma = 0.01 * (50.0 / 0.01)**t
  np.testing.assert_allclose(ve.sigma(t), sigma, rtol=1e-5)
  np.testing.assert_allclose(ve.sde(tf.zeros([4, 2]), t)[1], sigma * np.sqrt(2 * np.log(5000.0)), rtol=1e-5)
  beta_integral = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
  vp, subvp = noise.VPSDE(), noise.SubVPSDE()
  for sde, std in ((vp, np.sqrt(1 - np.exp(-beta_integral))), (subvp, 1 - np.exp(-beta_integral))):
    np.testing.assert_allclose(sde.mean_coeff(t), np.exp(-0.5 * beta_integral), rtol=1e-5)
    np.testing.assert_allclose(sde.std(t), std, rtol=1e-5)
    np.testing.assert_allclose(sde.sigma_of_t(t), std / np.exp(-0.5 * beta_integral), rtol=1e-5)
  beta = 0.1 + 19.9 * t
  np.testing.assert_allclose(subvp.sde(tf.zeros([4, 1]), t)[1],
                             np.sqrt(beta * (1 - np.exp(-2 * beta_integral))), rtol=1e-5)


@pytest.mark.parametrize('name', sorted(SDES))
def test_t_of_sigma_inverts_sigma_of_t(name):
  # float32 round trip through exp/log (VE) or expm1/log1p/sqrt (VP): 1e-4 relative on t
  # (sub-VP's asinh form keeps that down to t = 1e-4, where σ ≈ 1e-5).
  sde = SDES[name]()
  t = np.array([1e-4, 1e-3, 0.1, 0.5, 1.0], np.float32)
  np.testing.assert_allclose(sde.t_of_sigma(sde.sigma_of_t(t)), t, rtol=1e-4)


@pytest.mark.parametrize('name', sorted(SDES))
def test_prior_log_prob_matches_scipy(name):
  # float32 against float64 scipy: 1e-5 relative on values of a few hundred nats.
  sde = SDES[name]()
  z = sde.prior_sample([5, 3, 4], tf.constant([1, 2])).numpy()
  expected = scipy.stats.norm(0.0, sde.prior_std).logpdf(z.astype(np.float64)).sum(axis=(1, 2))
  np.testing.assert_allclose(sde.prior_log_prob(z), expected, rtol=1e-5)


def test_ve_prior_can_be_centred_on_the_data_mean():
  sde = noise.VESDE(0.01, 20.0, prior_mean=[3.0, -1.0])
  z = sde.prior_sample([20000, 2], [0, 3]).numpy()
  # 5 standard errors of the mean: 5 · 20/sqrt(20000) = 0.71.
  np.testing.assert_allclose(z.mean(0), [3.0, -1.0], atol=0.71)
  expected = scipy.stats.norm([3.0, -1.0], 20.0).logpdf(z[:7].astype(np.float64)).sum(-1)
  np.testing.assert_allclose(sde.prior_log_prob(z[:7]), expected, rtol=1e-5)


def test_prior_sample_is_a_pure_function_of_the_seed():
  sde = noise.VPSDE()
  a, b = sde.prior_sample([4, 2], [5, 6]), sde.prior_sample([4, 2], [5, 6])
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, sde.prior_sample([4, 2], [5, 7]))


@pytest.mark.parametrize('name', sorted(SDES))
def test_discretisation_reproduces_the_marginal(name):
  """Run the linear discrete chain x ← (1 + c_k) x + G_k z from 0 to 1 in closed form.

  Mean factor m ← (1 + c_k) m, kernel variance v ← (1 + c_k)² v + G_k². VE's
  G² telescope to σ(1)² − σ(0)² exactly (float32 only: 1e-5). VP's DDPM
  betas and sub-VP's Euler step agree with α and std to first order in
  h = 1/10000: log(1 − β h)/2 = −βh/2 − (βh)²/4 − ..., and the right-point
  sum overshoots ∫β by h(β_max − β_min)/2, so log α is off by about
  h ∫β²/4 + h(β_max − β_min)/4 = 3.8e-3 at t = 1: 1% relative.
  """
  sde = SDES[name]()
  num_steps = 10000
  grid = np.linspace(0.0, 1.0, num_steps + 1, dtype=np.float32)
  # All steps at once, one per batch row: f = c_k · x is linear in x for all three SDEs.
  f, g = sde.discretize(tf.ones([num_steps, 1]), grid[1:], np.diff(grid))
  c, g = f.numpy()[:, 0].astype(np.float64), g.numpy().astype(np.float64)
  mean_factor, variance = 1.0, 0.0
  for k in range(num_steps):
    mean_factor *= 1.0 + c[k]
    variance = (1.0 + c[k])**2 * variance + g[k]**2
  alpha, std, std0 = (float(v) for v in (sde.mean_coeff([1.0])[0], sde.std([1.0])[0], sde.std([0.0])[0]))
  rtol = 1e-5 if name == 've' else 1e-2
  np.testing.assert_allclose(mean_factor, alpha, rtol=rtol)
  np.testing.assert_allclose(variance, std**2 - alpha**2 * std0**2, rtol=rtol)


@pytest.mark.parametrize('name', sorted(SDES))
def test_reverse_drift_of_the_sde_and_of_the_probability_flow(name):
  sde = SDES[name]()
  x = tf.constant([[1.0, -2.0], [0.5, 3.0]])
  t = tf.constant([0.3, 0.8])
  score = tf.constant([[0.2, 0.1], [-1.0, 4.0]])
  drift, diffusion = sde.sde(x, t)
  g2 = (diffusion**2)[:, None]
  np.testing.assert_allclose(sde.reverse_drift(x, t, score), drift - g2 * score, rtol=1e-6)
  np.testing.assert_allclose(sde.reverse_drift(x, t, score, probability_flow=True),
                             drift - 0.5 * g2 * score, rtol=1e-6)


def test_the_ladder_is_the_ve_sde_at_its_times():
  ladder = noise.Ladder(20.0, 0.01, 10)
  sde = ladder.ve_sde()
  assert (sde.sigma_min, sde.sigma_max) == pytest.approx((0.01, 20.0))
  # float32 exp of t·log(2000) against the float64-built ladder: 1e-6 relative.
  np.testing.assert_allclose(sde.sigma(ladder.times), ladder.sigmas, rtol=1e-6)
  assert ladder.times[0] == 1.0 and ladder.times[-1] == 0.0


def test_sigma_to_index_is_exact_on_the_ladder_and_raises_off_it():
  ladder = noise.Ladder(1.0, 0.01, 232)  # a fine ladder: levels 2% apart
  sde = ladder.ve_sde()
  index = ladder.sigma_to_index(sde.sigma_of_t(ladder.times))
  np.testing.assert_array_equal(index, np.arange(232))
  off = np.sqrt(ladder.sigmas[3] * ladder.sigmas[4])  # halfway between two levels in log σ
  with pytest.raises(tf.errors.InvalidArgumentError, match='off the ladder'):
    ladder.sigma_to_index([ladder.sigmas[0], off])
  with pytest.raises(tf.errors.InvalidArgumentError, match='off the ladder'):
    tf.function(ladder.sigma_to_index)(tf.constant([off]))


def test_ladder_adapters_are_exact_on_the_ladder():
  ladder = noise.Ladder(5.0, 0.1, 7)

  def index_net(x, sigma_index):  # a stand-in network whose output names its level
    return x * tf.cast(sigma_index + 1, tf.float32)[:, None]

  x = tf.ones([7, 3])
  time_score = ladder.time_score_fn(index_net)
  np.testing.assert_array_equal(time_score(x, tf.constant(ladder.times)), index_net(x, tf.range(7)))
  with pytest.raises(tf.errors.InvalidArgumentError, match='off the ladder'):
    time_score(x[:1], tf.constant([0.5 * (ladder.times[1] + ladder.times[2])]))
  # The other way: a time score seen as a level score reads t_i for level i.
  round_trip = ladder.index_score_fn(time_score)
  np.testing.assert_array_equal(round_trip(x, tf.range(7)), index_net(x, tf.range(7)))


@pytest.mark.parametrize('make,match', [
    (lambda: noise.VESDE(1.0, 0.1), 'sigma_min < sigma_max'),
    (lambda: noise.VESDE(0.0, 1.0), 'sigma_min < sigma_max'),
    (lambda: noise.VPSDE(beta_min=0.0), 'beta_min < beta_max'),
    (lambda: noise.SubVPSDE(beta_min=5.0, beta_max=1.0), 'beta_min < beta_max'),
    (lambda: noise.VPSDE(T=0.0), 'T must be > 0'),
    (lambda: noise.Ladder(1.0, 0.1, 1), 'num_scales >= 2'),
    (lambda: noise.VESDE().sampling_eps(0.0), r'sampling_eps must be in \(0, 1\)'),
    (lambda: noise.VPSDE().sampling_eps(1.0), r'sampling_eps must be in \(0, 1\)'),
    (lambda: noise.VPSDE(T=0.5).sampling_eps(0.6), 'and < T=0.5'),
])
def test_bad_settings_raise_one_line_errors(make, match):
  with pytest.raises(ValueError, match=match) as error:
    make()
  assert '\n' not in str(error.value)


def test_default_sampling_eps_follows_score_sde():
  assert noise.VESDE().sampling_eps() == 1e-5
  assert noise.VPSDE().sampling_eps() == noise.SubVPSDE().sampling_eps() == 1e-3
