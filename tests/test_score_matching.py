"""Score-matching objectives against independent closed forms (no training).

Monte Carlo tolerances are stated as multiples of the estimated standard error
(4 SE, a false-alarm rate below 1e-4 per check) or as explicit numbers.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf import losses
from ncsn_tf.data import toy

N = 20000


def _gaussian(cov):
  """A one-component 'mixture' N(0, cov): −½E‖∇log p‖² = −½ tr(cov⁻¹) in closed form."""
  return toy.GaussianMixture([1.0], [[0.0, 0.0]], [cov])


def _truth(dist, sigma=None):
  if sigma is None:
    return lambda x, i: dist.score(x)
  return lambda x, i: dist.perturbed_score(x, sigma)


def _mean_and_se(t):
  t = np.asarray(t, np.float64)
  return t.mean(), t.std() / np.sqrt(len(t))


def test_esm_is_zero_at_truth_and_half_mean_square_at_zero():
  dist = toy.paper_mixture()
  x = dist.sample(4096, seed=[1, 2])
  esm = losses.get_loss('esm', exact_score_fn=dist.score)
  loss, index = esm(_truth(dist), x, tf.constant([1.0]), tf.constant([0, 0]))
  np.testing.assert_allclose(loss.numpy(), 0.0, atol=1e-6)
  assert index.dtype == tf.int32 and np.all(index.numpy() == 0)
  loss0, _ = esm(lambda x, i: tf.zeros_like(x), x, tf.constant([1.0]), tf.constant([0, 0]))
  expected = 0.5 * np.sum(dist.score(x).numpy()**2, -1)
  np.testing.assert_allclose(loss0.numpy(), expected, rtol=1e-5)


def test_esm_requires_exact_score():
  with pytest.raises(ValueError, match='exact'):
    losses.get_loss('esm')


def test_jacobian_trace_matches_closed_form():
  # f(x) = A x + sin(x): tr ∇f = tr A + Σ cos(x_d).
  a = tf.constant([[1.5, -2.0], [0.3, -0.7]])
  x = tf.random.stateless_normal([64, 2], [3, 4])
  out, trace = losses.jacobian_trace(lambda v: tf.matmul(v, a, transpose_b=True) + tf.sin(v), x)
  np.testing.assert_allclose(trace.numpy(), 0.8 + np.sum(np.cos(x.numpy()), -1), rtol=1e-5)
  assert out.shape == x.shape


@pytest.mark.parametrize('name,options', [
    ('ism', {}),
    ('ssm', {'num_projections': 4, 'projection': 'gaussian'}),
    ('ssm', {'num_projections': 4, 'projection': 'rademacher'}),
    ('ssm_vr', {'num_projections': 2, 'projection': 'gaussian'}),
    ('ssm_vr', {'num_projections': 2, 'projection': 'rademacher'}),
])
def test_implicit_and_sliced_at_truth_equal_minus_half_fisher_information(name, options):
  # N(0, Σ): at s = ∇log p every objective has expectation −½ tr(Σ⁻¹) exactly.
  cov = np.array([[2.0, 0.6], [0.6, 0.5]])
  dist = _gaussian(cov)
  x = dist.sample(N, seed=[5, 6])
  loss, index = losses.get_loss(name, **options)(_truth(dist), x, tf.constant([1.0]),
                                                 tf.constant([7, 8]))
  mean, se = _mean_and_se(loss.numpy())
  expected = -0.5 * np.trace(np.linalg.inv(cov))
  assert abs(mean - expected) < 4 * se + 1e-3, (mean, expected, se)
  assert np.all(index.numpy() == 0)


@pytest.mark.parametrize('name', ['ism', 'ssm', 'ssm_vr'])
@pytest.mark.parametrize('dataset', ['gmm', 'banana', 'rings'])
def test_at_truth_equals_minus_half_mean_square_score(name, dataset):
  # Integration by parts on non-Gaussian toys: E[tr ∇s + ½‖s‖²] = −½E‖s‖² at s = ∇log p.
  # Paired with the same x, the difference tr ∇s + ‖s‖² has mean 0.
  dist = toy.get_toy(dataset)
  x = dist.sample(N, seed=[9, 10])
  loss, _ = losses.get_loss(name, num_projections=2)(_truth(dist), x, tf.constant([1.0]),
                                                     tf.constant([11, 12]))
  half_sq = 0.5 * np.sum(dist.score(x).numpy().astype(np.float64)**2, -1)
  mean, se = _mean_and_se(loss.numpy() + half_sq)
  assert abs(mean) < 4 * se, (mean, se, half_sq.mean())


def test_ssm_has_more_variance_than_ssm_vr():
  dist = toy.paper_mixture()
  x = dist.sample(8192, seed=[1, 1])
  args = (_truth(dist), x, tf.constant([1.0]), tf.constant([2, 2]))
  plain = losses.get_loss('ssm')(*args)[0].numpy()
  reduced = losses.get_loss('ssm_vr')(*args)[0].numpy()
  assert reduced.var() < plain.var()


def test_objectives_order_a_wrong_score_above_the_truth():
  # ISM = ESM − ½E‖∇log p‖²: the gap between a wrong score and the truth is its ESM.
  dist = toy.paper_mixture()
  x = dist.sample(N, seed=[13, 14])
  shift = tf.constant([[0.5, -1.0]])
  wrong = lambda x, i: dist.score(x) + shift
  args = lambda fn: (fn, x, tf.constant([1.0]), tf.constant([1, 2]))
  ism = losses.get_loss('ism')
  gap = ism(*args(wrong))[0].numpy().mean() - ism(*args(_truth(dist)))[0].numpy().mean()
  # ESM of a constant shift c is ½‖c‖² = 0.625 exactly; ISM's gap adds E[cᵀ∇log p] ≈ 0.
  np.testing.assert_allclose(gap, 0.625, atol=0.05)


def _dsm_mean(score_fn, x, sigma, seed):
  loss, _ = losses.get_loss('dsm')(score_fn, x, tf.constant([sigma]), tf.constant(seed))
  return loss.numpy().astype(np.float64)


def test_dsm_optimum_is_the_perturbed_score():
  # Vincent (2011): DSM(s) = ½E_{p_σ}‖s − ∇log p_σ‖² + C. The best affine correction
  # s = ∇log p_σ + A x̃ + b, fitted by least squares to the DSM targets, is ≈ 0.
  dist = toy.paper_mixture()
  sigma = 0.7
  x = dist.sample(100000, seed=[15, 16])
  noise_seed = tf.constant([17, 18])
  perturbed = x + sigma * tf.random.stateless_normal(tf.shape(x), noise_seed)
  residual = (-(perturbed - x) / sigma**2 - dist.perturbed_score(perturbed, sigma)).numpy()
  design = np.concatenate([perturbed.numpy(), np.ones([len(x), 1])], -1)
  coef, *_ = np.linalg.lstsq(design.astype(np.float64), residual.astype(np.float64), rcond=None)
  np.testing.assert_allclose(coef, 0.0, atol=0.02)
  # And the perturbed score beats both the clean score and a shifted perturbed score by
  # exactly their Fisher divergence under p_σ (within Monte Carlo error).
  truth = _dsm_mean(lambda x, i: dist.perturbed_score(x, sigma), x, sigma, noise_seed)
  shifted = _dsm_mean(lambda x, i: dist.perturbed_score(x, sigma) + 0.3, x, sigma, noise_seed)
  np.testing.assert_allclose(shifted.mean() - truth.mean(), 0.5 * 2 * 0.3**2, atol=0.01)
  clean = _dsm_mean(lambda x, i: dist.score(x), x, sigma, noise_seed)
  assert clean.mean() > truth.mean()


def test_anneal_ssm_at_truth_matches_per_level_closed_form():
  # Gaussian N(0, Σ): p_σ = N(0, Σ + σ²I), so at the truth each level's term has mean
  # σ_i² · (−½ tr((Σ + σ_i²I)⁻¹)); levels are drawn uniformly.
  cov = np.array([[1.0, 0.3], [0.3, 0.8]])
  dist = _gaussian(cov)
  sigmas = np.array([3.0, 1.0, 0.3], np.float32)
  x = dist.sample(60000, seed=[19, 20])
  truth = lambda x, i: dist.perturbed_score(x, tf.gather(sigmas, i))
  for variance_reduction in (True, False):
    fn = functools.partial(losses.anneal_ssm_per_example, num_projections=2,
                           variance_reduction=variance_reduction)
    loss, index = fn(truth, x, tf.constant(sigmas), tf.constant([21, 22]))
    loss, index = loss.numpy(), index.numpy()
    for i, s in enumerate(sigmas):
      expected = s**2 * -0.5 * np.trace(np.linalg.inv(cov + s**2 * np.eye(2)))
      mean, se = _mean_and_se(loss[index == i])
      assert abs(mean - expected) < 4 * se + 1e-3, (i, mean, expected, se)


def test_anneal_ssm_minimiser_is_the_perturbed_score():
  # Same gap identity as DSM, per level: shifting s by c raises the σ²-weighted
  # objective by σ² ½‖c‖² in expectation.
  dist = toy.paper_mixture()
  sigmas = tf.constant([2.0])
  x = dist.sample(N, seed=[23, 24])
  truth = lambda x, i: dist.perturbed_score(x, 2.0)
  shifted = lambda x, i: dist.perturbed_score(x, 2.0) + tf.constant([[0.4, 0.0]])
  fn = losses.get_loss('anneal_ssm')
  gap = (fn(shifted, x, sigmas, tf.constant([1, 2]))[0].numpy().mean()
         - fn(truth, x, sigmas, tf.constant([1, 2]))[0].numpy().mean())
  np.testing.assert_allclose(gap, 4.0 * 0.5 * 0.16, rtol=0.05)


def test_projection_vectors_have_identity_second_moment():
  for projection in ('gaussian', 'rademacher'):
    v = losses.projection_vectors([50000, 2], tf.constant([1, 2]), projection).numpy()
    np.testing.assert_allclose(v.T @ v / len(v), np.eye(2), atol=0.03)
  assert set(np.unique(losses.projection_vectors([100, 2], tf.constant([1, 2]),
                                                 'rademacher').numpy())) == {-1.0, 1.0}
  with pytest.raises(ValueError):
    losses.get_loss('ssm', projection='sphere')


def test_losses_train_a_network_in_the_trainer_step():
  # Gradients flow through the second-order objectives for both network kinds.
  from ncsn_tf.models.mlp import NoiseConditionalMLP
  from ncsn_tf.models.mlp import ScoreMLP
  x = toy.paper_mixture().sample(16, seed=[0, 1])
  uncond = ScoreMLP(2, hidden_units=8, num_layers=2).build_for()
  cond = NoiseConditionalMLP(2, [2.0, 1.0], hidden_units=8, num_layers=2).build_for()
  for name, model in (('ism', uncond), ('ssm', uncond), ('ssm_vr', uncond), ('dsm', uncond),
                      ('anneal_ssm', cond), ('anneal_dsm', cond)):
    with tf.GradientTape() as tape:
      loss, _ = losses.get_loss(name)(lambda xx, ii: model(xx, ii), x, tf.constant([2.0, 1.0]),
                                      tf.constant([3, 4]))
      total = tf.reduce_mean(loss)
    grads = tape.gradient(total, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))
               for g in grads), name
