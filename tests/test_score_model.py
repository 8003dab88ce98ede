"""ScoreModel: the ladder adapter, the σ <-> t equivalence, and the continuous DSM in t coordinates.

Closed forms on a Gaussian N(μ, s² I): its σ-perturbed score is
−(y − μ)/(s² + σ²), and an SDE with x_t = α x0 + std z perturbs it into
N(αμ, (α² s² + std²) I), whose score is −(x − αμ)/(α² s² + std²). α and std
are written out below in numpy (float64) from the SDEs' β schedule, not taken
from noise/sde.py, so the test checks the equivalence, not a copy of it.
"""

import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf import losses
from ncsn_tf import noise
from ncsn_tf.models.mlp import NoiseConditionalMLP
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.noise import LADDER_RTOL

SIGMAS = np.geomspace(20.0, 0.01, 8).astype(np.float32)
MU = np.array([3.0, -1.0], np.float32)
S2 = 0.5  # the Gaussian's variance s² per coordinate


def gaussian_sigma_score(y, sigma):
  """The exact score of N(MU, S2 I) * N(0, σ² I): a continuous σ-network."""
  return -(y - MU) / (S2 + tf.cast(sigma, tf.float32)[:, None]**2)


def _ladder_network(seed=0):
  """A NoiseConditionalMLP on SIGMAS with per-level affines made to differ."""
  net = NoiseConditionalMLP(2, SIGMAS.tolist(), hidden_units=16, num_layers=2).build_for()
  rng = np.random.default_rng(seed)
  for affine in net.affines:
    affine.gamma.assign(rng.normal(1.0, 0.5, affine.gamma.shape))
    affine.beta.assign(rng.normal(0.0, 0.5, affine.beta.shape))
  return net


def _points(n=6, seed=0):
  return np.random.default_rng(seed).normal(0.0, 2.0, (n, 2)).astype(np.float32)


def _alpha_std(kind, t, beta_min=0.1, beta_max=20.0):
  """α(t), std(t) of VP and sub-VP in float64: B(t) = β_min t + (β_max − β_min) t²/2."""
  b = beta_min * t + 0.5 * (beta_max - beta_min) * t**2
  alpha = np.exp(-0.5 * b)
  return alpha, (np.sqrt(1.0 - alpha**2) if kind == 'vp' else 1.0 - alpha**2)


def test_the_adapter_is_exact_on_the_ladder():
  net = _ladder_network()
  model = ScoreModel(net, SIGMAS, continuous=False)
  x = _points(8)
  index = np.arange(8, dtype=np.int32)
  expected = np.asarray(net(x, index))
  np.testing.assert_array_equal(model.score_sigma(x, SIGMAS[index]), expected)
  np.testing.assert_array_equal(model.score_index(x, index), expected)
  # Within the tolerance (a σ recomputed in float32 elsewhere) is still the level.
  nudged = SIGMAS[index] * np.float32(1.0 + 0.5 * LADDER_RTOL)
  np.testing.assert_array_equal(model.score_sigma(x, nudged), expected)
  # And the ladder's VE SDE at the ladder's times lands on the levels.
  ladder = noise.Ladder(float(SIGMAS[0]), float(SIGMAS[-1]), len(SIGMAS))
  np.testing.assert_array_equal(model.score_t(x, ladder.times[index], ladder.ve_sde()), expected)
  assert not model.is_continuous and model.num_scales == 8


@pytest.mark.parametrize('in_graph', [False, True])
def test_the_adapter_fails_off_the_ladder_naming_the_sigma(in_graph):
  model = ScoreModel(_ladder_network(), SIGMAS, continuous=False)
  between = np.float32(np.sqrt(SIGMAS[2] * SIGMAS[3]))  # halfway in log σ
  sigma = np.array([SIGMAS[0], between], np.float32)
  fn = tf.function(model.score_sigma) if in_graph else model.score_sigma
  with pytest.raises(tf.errors.InvalidArgumentError, match='sigma off the ladder') as error:
    fn(_points(2), sigma)
  message = str(error.value)
  assert f'{between:g}'[:5] in message and 'L=8' in message
  # Just outside the tolerance is off the ladder too.
  with pytest.raises(tf.errors.InvalidArgumentError, match='off the ladder'):
    model.score_sigma(_points(1), SIGMAS[:1] * np.float32(1.0 + 3.0 * LADDER_RTOL))


def test_a_continuous_network_answers_a_level_at_its_sigma():
  model = ScoreModel(gaussian_sigma_score, SIGMAS, continuous=True)
  x = _points(8)
  index = np.arange(8, dtype=np.int32)
  np.testing.assert_array_equal(model.score_index(x, index), gaussian_sigma_score(x, SIGMAS[index]))
  off = np.array([0.37] * 8, np.float32)  # any σ: no ladder check
  np.testing.assert_array_equal(model.score_sigma(x, off), gaussian_sigma_score(x, off))
  assert model.is_continuous


@pytest.mark.parametrize('kind', ['vp', 'subvp'])
def test_score_t_is_the_exact_perturbed_score_of_a_gaussian(kind):
  # The σ-network is the exact VE score of N(MU, S2 I); score_t through
  # x/α and σ = std/α must be the exact score of N(αμ, α² s² + std²).
  # float32 throughout: at t = 1, α = 0.0065 and x/α is ~150x x, so a
  # relative 1e-5 (some tens of ulps) is the tolerance.
  sde = noise.VPSDE() if kind == 'vp' else noise.SubVPSDE()
  model = ScoreModel(gaussian_sigma_score, SIGMAS, continuous=True)
  t = np.array([1e-3, 0.01, 0.1, 0.3, 0.6, 1.0], np.float32)
  alpha, std = _alpha_std(kind, t.astype(np.float64))
  rng = np.random.default_rng(1)
  x = (alpha[:, None] * MU + np.sqrt(alpha[:, None]**2 * S2 + std[:, None]**2)
       * rng.normal(size=(6, 2))).astype(np.float32)
  expected = -(x - alpha[:, None] * MU) / (alpha[:, None]**2 * S2 + std[:, None]**2)
  np.testing.assert_allclose(model.score_t(x, t, sde), expected, rtol=1e-5, atol=1e-6)


def test_score_t_for_ve_is_score_sigma_at_sigma_of_t():
  sde = noise.VESDE(0.01, 20.0)
  model = ScoreModel(gaussian_sigma_score, SIGMAS, continuous=True)
  x, t = _points(4), np.array([0.0, 0.25, 0.5, 1.0], np.float32)
  sigma = 0.01 * (2000.0**t.astype(np.float64))
  expected = -(x - MU) / (S2 + sigma[:, None]**2)
  np.testing.assert_allclose(model.score_t(x, t, sde), expected, rtol=1e-5)


@pytest.mark.parametrize('kind', ['vp', 'subvp'])
def test_continuous_dsm_in_sigma_coordinates_is_score_sde_loss_in_t(kind):
  # score_sde's VP loss, in t coordinates with score_t and x_t = α x + std z:
  #   λ_t = std²: ½ std² ‖score_t(x_t) + z/std‖²  equals the 'sigma2' loss;
  #   λ_t = g²:   ½ g²   ‖score_t(x_t) + z/std‖²  equals the 'likelihood' loss.
  # The same numbers by algebra (losses.continuous_dsm_per_example), so only
  # float32 rounding separates them: rtol 1e-4.
  sde = noise.VPSDE() if kind == 'vp' else noise.SubVPSDE()
  network = lambda y, sigma: 0.7 * gaussian_sigma_score(y, sigma) + 0.1  # not the truth
  model = ScoreModel(network, SIGMAS, continuous=True)
  x = tf.random.stateless_normal([512, 2], [3, 4]) + MU
  seed = tf.constant([5, 6])
  for weighting in ('sigma2', 'likelihood'):
    loss, _ = losses.continuous_dsm_per_example(network, x, SIGMAS, seed, sde=sde,
                                                weighting=weighting)
    t, _, z, _ = losses.continuous_noise_levels(x, SIGMAS, seed, sde=sde, weighting=weighting)
    mean, std = sde.marginal(x, t)
    x_t = mean + std[:, None] * z
    residual = tf.reduce_sum(tf.square(model.score_t(x_t, t, sde) + z / std[:, None]), axis=-1)
    lam = std**2 if weighting == 'sigma2' else sde.sde(x, t)[1]**2
    np.testing.assert_allclose(loss, 0.5 * lam * residual, rtol=1e-4)


def test_methods_are_stable_objects_so_tf_function_traces_once():
  model = ScoreModel(gaussian_sigma_score, SIGMAS, continuous=True)
  assert model.score_sigma is model.score_sigma and model.score_t is model.score_t

  @tf.function
  def apply(score_fn, x, sigma):
    return score_fn(x, sigma)

  x, sigma = tf.constant(_points(3)), tf.constant([1.0, 2.0, 3.0])
  for _ in range(3):
    apply(model.score_sigma, x, sigma)
  assert apply.experimental_get_tracing_count() == 1


@pytest.mark.parametrize('sigmas', [[], [1.0, 0.0], [0.5, 1.0]])
def test_bad_ladders_are_rejected(sigmas):
  with pytest.raises(ValueError, match='strictly decreasing list of positive floats'):
    ScoreModel(gaussian_sigma_score, sigmas, continuous=True)
