"""Every sampler of the registry (sampling/samplers/) with exact scores: moments, weights, NFE.

The exact score of p_t for a Gaussian mixture under any of the three SDEs is
that of the mixture with means α(t) μ_k and covariances α² Σ_k + std(t)² I
(the kernel is N(α x0, std² I)); it is computed here by autodiff of TFP's
mixture log-density, independently of the samplers' own σ(t) mapping. With
it, a sampler's only errors are its discretisation and Monte Carlo noise.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from ncsn_tf import noise
from ncsn_tf.data import toy
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.sampling import langevin
from ncsn_tf.sampling import samplers
from ncsn_tf.sampling.samplers import heun
from ncsn_tf.sampling.samplers import ode
from ncsn_tf.sampling.samplers import pc

tfd = tfp.distributions

SIGMA_MAX = 20.0
SDES = {
    've': lambda: noise.VESDE(0.01, SIGMA_MAX),
    'vp': lambda: noise.VPSDE(),
    'subvp': lambda: noise.SubVPSDE(),
}
GAUSSIAN_MEAN = np.float32([1.0, -2.0])
GAUSSIAN_COV = np.float32([[2.0, 0.6], [0.6, 0.5]])


def gaussian():
  return toy.GaussianMixture([1.0], [GAUSSIAN_MEAN], [GAUSSIAN_COV])


def exact_score_fn(mixture, sde):
  """score_fn(x [N, D], t [N]) of p_t, through TFP: ∇_x log Σ_k w_k N(x; α μ_k, α² Σ_k + std² I)."""
  eye = np.eye(mixture.dim, dtype=np.float32)

  def score_fn(x, t):
    alpha, std = sde.mean_coeff(t), sde.std(t)
    loc = alpha[:, None, None] * mixture.means[None]                                   # [N, K, D]
    cov = alpha[:, None, None, None]**2 * mixture.covariances[None] + std[:, None, None, None]**2 * eye
    p_t = tfd.MixtureSameFamily(tfd.Categorical(probs=mixture.weights),
                                tfd.MultivariateNormalTriL(loc, tf.linalg.cholesky(cov)))
    with tf.GradientTape() as tape:
      tape.watch(x)
      log_p = p_t.log_prob(x)
    return tape.gradient(log_p, x)
  return score_fn


def counting(score_fn):
  """(score_fn that adds 1 to a tf.Variable at every call, the variable): a count made
  inside the graph, independent of the samplers' own arithmetic."""
  counter = tf.Variable(0, dtype=tf.int32)

  def counted(x, t):
    counter.assign_add(1)
    return score_fn(x, t)
  return counted, counter


@functools.lru_cache(maxsize=None)
def case(data: str, sde_name: str):
  """(distribution, sde, score_fn, counter), cached so that every test reuses the samplers'
  traces; score_fn counts its calls in `counter` (`counting`)."""
  distribution = gaussian() if data == 'gaussian' else toy.paper_mixture()
  sde = SDES[sde_name]()
  return (distribution, sde, *counting(exact_score_fn(distribution, sde)))


def start(distribution, sde, num, seed=(3, 4)):
  """x_init at T. VP, sub-VP: the prior (α(1) = 0.0066 makes its offset from p_T negligible).

  VE: exact draws from p_T = p * N(0, σ_max²), so that the test measures the
  sampler and not the prior's offset from p_T (its own test is below).
  """
  if isinstance(sde, noise.VESDE):
    return distribution.distribution(SIGMA_MAX).sample(num, seed=tf.constant(seed))
  return sde.prior_sample([num, distribution.dim], tf.constant(seed))


#: Annealed Langevin's ladder over the SDEs' noise levels (VE σ from 20 to 0.01;
#: VP and sub-VP span it too): 20 levels x 50 steps, toy_gmm_sde.cfg's chain.
ALD_LADDER = noise.Ladder(SIGMA_MAX, 0.01, 20)

SAMPLERS = {
    # name: (registry name, settings); step counts as small as the tolerances allow.
    'reverse_diffusion+langevin': ('pc', dict(num_steps=200, predictor='reverse_diffusion',
                                               corrector='langevin', snr=0.16)),
    'euler_maruyama': ('pc', dict(num_steps=200, predictor='euler_maruyama', corrector='none')),
    'ancestral+ald': ('pc', dict(num_steps=200, predictor='ancestral', corrector='ald', snr=0.16)),
    # At rtol = atol = 1e-3 the VP ODE moved the Gaussian's mean by 0.07 (solver error,
    # 1.2x the mean's 5 standard errors); at 1e-4 by 0.04 and 0.003.
    'ode': ('ode', dict(rtol=1e-4, atol=1e-4, denoise=True)),
    # 35 steps (69 NFE): at EDM's 18 the σ range of sub-VP (1e-4 to 152: six decades)
    # leaves Σ 14% high (VP 10%); 35 steps 4% (3%), 70 steps 1.5%, converging.
    'heun': ('heun', dict(num_steps=35)),
    # step_lr 2e-5: at 5e-6 the lower levels do not mix in 50 steps (Σ_00 2.35 for 2.0);
    # at 2e-5 2.10 (the unadjusted Langevin step's bias, within the 3% + 5 SE below).
    'ald': ('ald', dict(ladder=ALD_LADDER, n_steps_each=50, step_lr=2e-5, denoise=True)),
    'dpm_solver': ('dpm_solver', dict(num_steps=30)),
    # Churn needs more steps than Heun: γ = 40/64 capped at √2 − 1 at every level.
    'edm_stochastic': ('edm_stochastic', dict(num_steps=64, s_churn=40.0)),
    # Batch step control: per-example control is biased in 2-D (test_fast_samplers.py).
    'adaptive_sde': ('adaptive_sde', dict(rel_tol=0.05)),
}


def draw(data, sde_name, sampler, num):
  """(distribution, samples [num, 2], nfe) of one sampler; asserts that the reported NFE is
  the number of score calls the counter saw in the graph (denoising steps included)."""
  distribution, sde, score_fn, counter = case(data, sde_name)
  name, settings = SAMPLERS[sampler]
  counter.assign(0)
  x, nfe = samplers.make_sampler(name, sde, **settings)(score_fn, start(distribution, sde, num),
                                                       tf.constant([1, 2]))
  assert int(nfe) == int(counter.numpy()) > 0, (sampler, int(nfe), int(counter.numpy()))
  return distribution, x.numpy(), int(nfe)


def test_every_registered_sampler_is_checked_here():
  """A sampler added to the registry without a case here fails: the moments, and the NFE
  counted in the graph (`draw`), are the contract every sampler must meet."""
  assert {name for name, _ in SAMPLERS.values()} == set(samplers.names())


@pytest.mark.parametrize('sde_name', ['ve', 'vp', 'subvp'])
@pytest.mark.parametrize('sampler', sorted(SAMPLERS))
def test_samplers_reproduce_a_gaussians_mean_and_covariance(sampler, sde_name):
  """4000 samples of N(μ, Σ), Σ = [[2, .6], [.6, .5]], under VE, VP and sub-VP, and the
  reported NFE against the score calls counted in the graph (`draw`).

  Tolerances: 5 standard errors of the sample mean (sqrt(Σ_ii/M): 0.11, 0.056)
  and covariance (sqrt((Σ_ii Σ_jj + Σ_ij²)/M): 0.16, 0.08, 0.04, times 5
  below), plus 3% of Σ for the discretisation (measured 0-5%).
  """
  if sampler == 'ancestral+ald' and sde_name == 'subvp':
    pytest.skip('the ancestral predictor is defined for VE and VP only')
  _, x, _ = draw('gaussian', sde_name, sampler, 4000)
  num = len(x)
  mean_se = np.sqrt(np.diag(GAUSSIAN_COV) / num)
  np.testing.assert_array_less(np.abs(x.mean(0) - GAUSSIAN_MEAN), 5 * mean_se)
  var = np.diag(GAUSSIAN_COV)
  cov_se = np.sqrt((np.outer(var, var) + GAUSSIAN_COV**2) / num)
  np.testing.assert_array_less(np.abs(np.cov(x.T) - GAUSSIAN_COV), 5 * cov_se + 0.03 * np.abs(GAUSSIAN_COV))


@pytest.mark.parametrize('sde_name,sampler', [
    ('ve', 'reverse_diffusion+langevin'), ('ve', 'euler_maruyama'), ('ve', 'ode'), ('ve', 'heun'),
    ('vp', 'reverse_diffusion+langevin'), ('vp', 'ancestral+ald'), ('vp', 'ode'), ('vp', 'heun'),
    ('subvp', 'euler_maruyama'), ('subvp', 'ode'), ('subvp', 'heun'),
])
def test_samplers_reproduce_the_paper_mixture(sde_name, sampler):
  """0.2 N((−5, −5), I) + 0.8 N((5, 5), I): weight of (−5, −5), mean 3, per-axis std sqrt(17).

  Tolerances on 4000 samples: weight 0.03 (4.7 standard errors sqrt(.16/4000)
  = 0.0063; at 200 steps PC measured up to 0.017 off on 2000 samples), mean
  0.35 (5 standard errors sqrt(17/4000) = 0.065, plus the weight's effect:
  d mean/d w = −10, 0.03 of weight moves it 0.3), std 5%.
  """
  distribution, x, _ = draw('mixture', sde_name, sampler, 4000)
  weight = np.mean(distribution.nearest_component(x).numpy() == 0)
  assert abs(weight - 0.2) < 0.03, weight
  np.testing.assert_allclose(x.mean(0), [3.0, 3.0], atol=0.35)
  np.testing.assert_allclose(x.std(0), [np.sqrt(17.0)] * 2, rtol=0.05)


def test_the_ve_prior_at_the_data_mean_removes_the_deterministic_samplers_weight_bias():
  """The uncentred VE prior, with exact scores: N(0, σ_max²) sits 3√2 off p_T's centre (3, 3).

  Heun cannot mix, so it carries the offset into the weights: it predicts
  0.26 for the (−5, −5) mode (true 0.2; the learned ODE gave the same, docs/sde.md
  "The prior"); centred on the data mean it predicts 0.19. Tolerances: 0.03
  (4.7 SE at 4000 samples).
  """
  mixture, _, _, _ = case('mixture', 've')
  weights = {}
  for prior_mean in (0.0, 3.0):
    sde = noise.VESDE(0.01, SIGMA_MAX, prior_mean=prior_mean)
    x_init = sde.prior_sample([4000, 2], tf.constant([5, 6]))
    x, _ = heun.heun_sample(exact_score_fn(mixture, sde), sde, x_init, num_steps=18)
    weights[prior_mean] = np.mean(mixture.nearest_component(x).numpy() == 0)
  assert weights[0.0] > 0.24, weights
  assert abs(weights[3.0] - 0.2) < 0.03, weights


@pytest.mark.parametrize('sde_name', ['ve', 'vp'])
def test_the_ode_maps_data_to_the_prior_and_back(sde_name):
  """eps -> T -> eps at rtol = atol = 1e-6 returns every point within 2e-3.

  DormandPrince bounds each step's local error by ~1e-6 (|x| <= 8) in a norm
  over the whole batch, so single points go further; and between the modes
  the backward flow spreads neighbouring latents apart, amplifying the
  forward error. Measured: median 1e-5 to 2e-4, worst 7e-4 (VE) and 4e-4 (VP)
  of 500 points; at 1e-5 the worst VP point was 1.8e-2 off.
  The latent's spread must match p_T: per-axis variance σ_max² + 17 for VE,
  1 for VP, within 25% (4 standard errors of a variance from 500 points,
  sqrt(2/500) = 6.3% each).
  """
  mixture, sde, score_fn, _ = case('mixture', sde_name)
  x0 = mixture.sample(500, seed=tf.constant([8, 9]))
  latent, nfe_encode = ode.ode_encode(score_fn, sde, x0, rtol=1e-6, atol=1e-6)
  back, nfe_decode = ode.ode_sample(score_fn, sde, latent, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(back, x0, atol=2e-3)
  expected_var = SIGMA_MAX**2 + 17.0 if sde_name == 've' else 1.0
  np.testing.assert_allclose(np.var(latent.numpy(), axis=0), [expected_var] * 2, rtol=0.25)
  assert int(nfe_encode) > 10 and int(nfe_decode) > 10


def test_ode_nfe_is_the_solvers_count_and_grows_with_the_tolerance():
  mixture, sde, score_fn, _ = case('mixture', 've')
  x_init = start(mixture, sde, 500)
  _, nfe_loose = ode.ode_sample(score_fn, sde, x_init, rtol=1e-3, atol=1e-3)
  _, nfe_tight = ode.ode_sample(score_fn, sde, x_init, rtol=1e-5, atol=1e-5)
  # DormandPrince: 6 new evaluations per step (first-same-as-last), plus the start.
  assert 20 < int(nfe_loose) < int(nfe_tight) < 400
  _, nfe_denoised = ode.ode_sample(score_fn, sde, x_init, rtol=1e-3, atol=1e-3, denoise=True)
  assert int(nfe_denoised) == int(nfe_loose) + 1


def test_heun_error_falls_about_fourfold_when_its_steps_double():
  """One deterministic trajectory per start on N(μ, s² I) under VE, against the exact ODE solution.

  x(σ) = μ + (x_T − μ) sqrt(s² + σ²)/sqrt(s² + σ_max²); at σ = 0 the factor is
  s/sqrt(s² + σ_max²). Heun is second order, so the error falls 4x per
  doubling (measured 4.5, 4.2 from 16 to 64 steps; 3-6 allowed). σ_min =
  0.002 keeps the last, Euler, step's error (σ_min²/(2 s²) = 2e-6 relative)
  and float32 round-off far below the 4e-3 error at 64 steps.
  """
  mu, s = GAUSSIAN_MEAN, 1.0
  sde = noise.VESDE(0.002, SIGMA_MAX)

  def score_fn(x, t):
    return -(x - mu) / (s**2 + sde.sigma(t)[:, None]**2)

  x_T = mu + SIGMA_MAX * tf.random.stateless_normal([64, 2], [1, 2])
  sigma_max = float(sde.sigma([1.0])[0])
  exact = mu + (x_T - mu) * s / np.sqrt(s**2 + sigma_max**2)
  errors = []
  for num_steps in (16, 32, 64):
    x, nfe = heun.heun_sample(score_fn, sde, x_T, num_steps=num_steps)
    assert int(nfe) == 2 * num_steps - 1
    errors.append(float(tf.reduce_max(tf.abs(x - exact))))
  ratios = np.array(errors[:-1]) / np.array(errors[1:])
  assert np.all((ratios > 3) & (ratios < 6)), (errors, ratios)


def test_karras_schedule():
  sigmas = heun.karras_sigmas(0.002, 80.0, 18)
  assert sigmas.shape == (19,) and sigmas[-1] == 0
  np.testing.assert_allclose(sigmas[[0, 17]], [80.0, 0.002], rtol=1e-6)
  assert np.all(np.diff(sigmas) < 0)


def test_pc_counts_score_evaluations_and_is_a_pure_function_of_the_seed():
  mixture, sde, score_fn, _ = case('mixture', 've')
  x_init = start(mixture, sde, 64)
  kwargs = dict(num_steps=5, corrector_steps=2)
  a, nfe = pc.pc_sample(score_fn, sde, x_init, tf.constant([1, 2]), **kwargs)
  assert int(nfe) == 5 * 3
  b, _ = pc.pc_sample(score_fn, sde, x_init, tf.constant([1, 2]), **kwargs)
  c, _ = pc.pc_sample(score_fn, sde, x_init, tf.constant([1, 3]), **kwargs)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  _, nfe = pc.pc_sample(score_fn, sde, x_init, tf.constant([1, 2]), num_steps=5, corrector='none')
  assert int(nfe) == 5


def test_samplers_run_inside_a_tf_function():
  """As an exported signature would call them: no eager-only step on the way in."""
  mixture, sde, score_fn, _ = case('mixture', 'vp')
  x_init = start(mixture, sde, 16)

  @tf.function
  def sample_all(x_init, seed):
    return [samplers.make_sampler(name, sde, **settings)(score_fn, x_init, seed)[0]
            for name, settings in (SAMPLERS['heun'], SAMPLERS['euler_maruyama'])]

  for x in sample_all(x_init, tf.constant([1, 2])):
    assert x.shape == (16, 2) and np.all(np.isfinite(x))


def test_the_ald_entry_is_annealed_langevin_through_the_ladder_adapter():
  """A level-indexed network behind ladder.time_score_fn, sampled by the registry's 'ald',
  gives exactly the samples of langevin.annealed_langevin_dynamics on the network itself."""
  ladder = noise.Ladder(SIGMA_MAX, 0.01, 10)
  mixture = toy.paper_mixture()

  def index_net(x, sigma_index):
    return mixture.perturbed_score(x, tf.gather(ladder.sigmas, sigma_index))

  x_init = tf.random.stateless_uniform([256, 2], [4, 4], -8.0, 8.0)
  seed = tf.constant([5, 5])
  settings = dict(n_steps_each=20, step_lr=2e-5, denoise=True)
  x, nfe = samplers.make_sampler('ald', ladder.ve_sde(), ladder=ladder, **settings)(
      ladder.time_score_fn(index_net), x_init, seed)
  reference = langevin.annealed_langevin_dynamics(index_net, x_init, ladder.sigmas, seed=seed, **settings)
  np.testing.assert_array_equal(x, reference)
  assert int(nfe) == 10 * 20 + 1


@pytest.mark.parametrize('name,settings,match', [
    ('nope', {}, r"unknown sampler 'nope'; choose from \['adaptive_sde', 'ald', 'dpm_solver', "
                 r"'edm_stochastic', 'heun', 'ode', 'pc'\]"),
    ('pc', dict(predictor='leapfrog'), "unknown predictor 'leapfrog'; choose from"),
    ('pc', dict(corrector='mala'), "unknown corrector 'mala'; choose from"),
    ('pc', dict(num_steps=0), 'num_steps must be an integer >= 1'),
    ('pc', dict(corrector_steps=-1), 'corrector_steps must be an integer >= 0'),
    ('pc', dict(snr=0.0), 'snr must be > 0'),
    ('pc', dict(sampling_eps=1.5), r'sampling_eps must be in \(0, 1\)'),
    ('pc', dict(predictor='none', corrector='none'), 'predictor none needs a corrector'),
    ('ode', dict(rtol=0.0), 'ode rtol must be > 0'),
    ('ode', dict(atol=-1e-5), 'ode atol must be > 0'),
    ('ode', dict(sampling_eps=0.0), r'sampling_eps must be in \(0, 1\)'),
    ('heun', dict(num_steps=1), 'num_steps must be an integer >= 2'),
    ('heun', dict(num_steps=2.5), 'num_steps must be an integer >= 2'),
    ('heun', dict(rtol=1e-3), r"unknown settings \['rtol'\] for sampler 'heun'"),
    ('ald', dict(), 'the ald sampler needs a noise.Ladder'),
])
def test_bad_sampler_settings_raise_one_line_errors_before_any_work(name, settings, match):
  with pytest.raises(ValueError, match=match) as error:
    samplers.make_sampler(name, noise.VESDE(), **settings)
  assert '\n' not in str(error.value)


def test_ancestral_is_refused_for_sub_vp_and_registry_lookups_list_names():
  with pytest.raises(ValueError, match='ancestral predictor is defined for VE and VP'):
    samplers.make_sampler('pc', noise.SubVPSDE(), predictor='ancestral')
  with pytest.raises(ValueError, match=r"choose from \['ald', 'langevin', 'none'\]"):
    samplers.get_corrector('hmc')
  assert samplers.get_predictor('reverse_diffusion') is pc.reverse_diffusion


# --- Score evaluations, counted in the graph -------------------------------------------

NFE_LADDER = noise.Ladder(SIGMA_MAX, 0.01, 5)


def test_the_ald_run_on_a_ladder_network_reports_its_score_calls():
  """--sampler=ald runs the paper's chain on the model's own ladder (`run_model`); its
  NFE (L·T, + 1 with denoise) against a count inside the network."""
  counter = tf.Variable(0, dtype=tf.int32)
  mixture = toy.paper_mixture()

  def index_net(x, sigma_index):
    counter.assign_add(1)
    return mixture.perturbed_score(x, tf.gather(NFE_LADDER.sigmas, sigma_index))

  model = ScoreModel(index_net, NFE_LADDER.sigmas, continuous=False)
  x_init = tf.random.stateless_uniform([16, 2], [4, 4], -8.0, 8.0)
  for denoise in (False, True):
    counter.assign(0)
    _, _, nfe = samplers.get_sampler('ald').run_model(model, None, x_init, tf.constant([5, 5]),
                                                      n_steps_each=3, step_lr=2e-5,
                                                      denoise=denoise)
    assert int(nfe) == int(counter.numpy()) == 5 * 3 + denoise


def test_the_pc_langevin_corrector_at_a_zero_score_returns_finite_samples():
  """An untrained network whose output layer is zero gives s = 0 everywhere, where the
  corrector's ε = 2 (r ‖z‖/‖s‖)² is infinite (NaN samples before). The move is skipped,
  so the chain is the predictor's alone, to the bit."""
  sde = noise.VESDE(0.01, SIGMA_MAX)
  zero_score = lambda x, t: tf.zeros_like(x)
  x_init = sde.prior_sample([64, 2], tf.constant([3, 4]))
  corrected, _ = pc.pc_sample(zero_score, sde, x_init, tf.constant([1, 2]), num_steps=5,
                              corrector='langevin', corrector_steps=2)
  assert np.all(np.isfinite(corrected))
  alone, _ = pc.pc_sample(zero_score, sde, x_init, tf.constant([1, 2]), num_steps=5,
                          corrector='none')
  np.testing.assert_array_equal(corrected, alone)
