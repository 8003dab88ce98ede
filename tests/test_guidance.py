"""Class-conditional sampling (ncsn_tf/sampling/guidance.py) against closed forms.

The test distribution is a two-Gaussian mixture in 2-D, p(x) = Σ_k π_k N(μ_k, Σ_k),
with the class y the component. Perturbed by N(0, σ² I) every piece is closed form:
p_σ(x, y=k) = π_k N(x; μ_k, Σ_k + σ² I), so the exact score ∇ log p_σ(x), the exact
classifier p_σ(y | x) = softmax_k(log π_k + log N_k) and the exact conditional score
−(Σ_y + σ² I)^{-1}(x − μ_y) are all known. Bayes' rule for scores then says that
classifier guidance at w = 1 is exactly the conditional Gaussian score, so the guided
chains are linear and their output moments are computable exactly:

* annealed Langevin: x ← x + ε P(μ − x) + sqrt(2ε) z propagates mean and
  covariance as m ← μ + A(m − μ), C ← A C Aᵀ + 2ε I with A = I − εP;
* the probability-flow ODE: in y = x/α, dy/dσ = σ(Σ + σ²)^{-1}(y − μ) gives
  y(σ) − μ = M (y(σ_max) − μ), M = (Σ + σ²)^{1/2}(Σ + σ_max²)^{-1/2}.

So the sample moments are compared with these exact values within Monte-Carlo
tolerances, and the exact values themselves with the class-conditional target.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import guidance

tfd = tfp.distributions

WEIGHTS = np.array([0.7, 0.3])
MEANS = np.array([[-3.0, 0.0], [3.0, 1.0]])
COVS = np.array([[[0.5, 0.2], [0.2, 0.3]], [[0.3, -0.1], [-0.1, 0.6]]])
NUM_CLASSES = 2
# Samples per class in the sampling tests. The sample mean of a coordinate has
# standard error sqrt(C_jj / n); a covariance entry sqrt((C_jj C_kk + C_jk²) / n)
# (Gaussian samples; the ALD output is Gaussian up to its uniform start, shrunk
# by a factor < 1e-3 after the first level). Bounds at 5 standard errors: a
# correct sampler fails one of the 5 moment checks of a class with probability ~3e-6.
PER_CLASS = 2000
MC_SIGMAS = 5.0


def component_log_joint(x, sigma):
  """log π_k + log N(x; μ_k, Σ_k + σ² I): float32 [N, K] for x [N, 2], σ [N].

  The 2x2 Gaussian written out (inverse by the adjugate): a few elementwise ops,
  so the thousands of sampler steps below stay cheap; `test_the_closed_forms_match_tfp`
  checks it against tfp's MultivariateNormalTriL.
  """
  x = tf.cast(x, tf.float32)
  s2 = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])**2               # [N, 1]
  a = COVS[:, 0, 0].astype(np.float32) + s2                                # [N, K]
  b = COVS[:, 0, 1].astype(np.float32)                                     # [K]
  d = COVS[:, 1, 1].astype(np.float32) + s2
  det = a * d - b * b
  u = x[:, None, 0] - MEANS[:, 0].astype(np.float32)                       # [N, K]
  v = x[:, None, 1] - MEANS[:, 1].astype(np.float32)
  mahalanobis = (d * u * u - 2.0 * b * u * v + a * v * v) / det
  return (np.log(WEIGHTS).astype(np.float32)
          - 0.5 * (mahalanobis + tf.math.log(det) + 2.0 * np.log(2.0 * np.pi)))


def test_the_closed_forms_match_tfp():
  x, sigma, _ = _points(n=16, seed=9)
  cov = COVS[None] + (sigma.astype(np.float64)**2)[:, None, None, None] * np.eye(2)
  dist = tfd.MultivariateNormalTriL(loc=MEANS, scale_tril=np.linalg.cholesky(cov))
  expected = np.log(WEIGHTS) + dist.log_prob(x[:, None, :].astype(np.float64)).numpy()
  # float32 against float64: log densities down to about −100 at 1e-5 relative.
  np.testing.assert_allclose(component_log_joint(x, sigma).numpy(), expected, rtol=1e-5, atol=1e-4)


def exact_classifier(x, sigma):
  """Logits of the exact p_σ(y | x): the log joints (softmax normalises them)."""
  return component_log_joint(x, sigma)


def _grad(fn, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    value = fn(x)
  return tape.gradient(value, x)


def mixture_score(x, sigma):
  """∇ log p_σ(x), by autodiff of the exact log density."""
  x = tf.cast(x, tf.float32)
  return _grad(lambda xx: tf.reduce_sum(tf.reduce_logsumexp(component_log_joint(xx, sigma), -1)),
               x)


def conditional_score(x, sigma, labels):
  """∇ log p_σ(x | y), by autodiff of the exact component log density."""
  x = tf.cast(x, tf.float32)
  return _grad(lambda xx: tf.reduce_sum(tf.gather(component_log_joint(xx, sigma),
                                                  labels, batch_dims=1)), x)


def numpy_conditional_score(x, sigma, labels):
  """−(Σ_y + σ² I)^{-1}(x − μ_y), in float64."""
  out = np.empty_like(x, np.float64)
  for n, (xn, s, y) in enumerate(zip(x, np.broadcast_to(sigma, len(x)), labels)):
    out[n] = -np.linalg.solve(COVS[y] + s * s * np.eye(2), xn - MEANS[y])
  return out


def numpy_mixture_score(x, sigma):
  """Σ_k r_k(x) (−(Σ_k + σ² I)^{-1}(x − μ_k)), r the posterior; float64."""
  sigma = np.broadcast_to(sigma, len(x))
  log_joint = np.stack([np.log(WEIGHTS[k]) - 0.5 * np.array([
      (xn - MEANS[k]) @ np.linalg.solve(COVS[k] + s * s * np.eye(2), xn - MEANS[k])
      + np.log(np.linalg.det(COVS[k] + s * s * np.eye(2))) for xn, s in zip(x, sigma)])
      for k in range(NUM_CLASSES)], axis=1)
  r = np.exp(log_joint - log_joint.max(1, keepdims=True))
  r /= r.sum(1, keepdims=True)
  return sum(r[:, k:k + 1] * numpy_conditional_score(x, sigma, np.full(len(x), k))
             for k in range(NUM_CLASSES))


class LadderNetwork:
  """A ladder network s(x, sigma_index) answering the exact mixture score at its levels."""

  def __init__(self, sigmas):
    self.sigmas = tf.constant(sigmas, tf.float32)

  def __call__(self, x, sigma_index):
    return mixture_score(x, tf.gather(self.sigmas, sigma_index))


class ConditionalNetwork:
  """An exact class-conditional σ-network s(x, σ, y): y = 2 (∅) or None is p_σ(x)."""

  label_classes = NUM_CLASSES

  def __call__(self, x, sigma, labels=None):
    unconditional = mixture_score(x, sigma)
    if labels is None:
      return unconditional
    labels = tf.cast(labels, tf.int32)
    conditional = conditional_score(x, sigma, tf.minimum(labels, NUM_CLASSES - 1))
    return tf.where((labels == NUM_CLASSES)[:, None], unconditional, conditional)


def _points(n=64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(scale=3.0, size=(n, 2)).astype(np.float32)
  sigma = np.exp(rng.uniform(np.log(0.05), np.log(10.0), n)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  return x, sigma, labels


SIGMAS = np.geomspace(10.0, 0.1, 10).astype(np.float32)


def _continuous():
  return ScoreModel(ConditionalNetwork(), SIGMAS, continuous=True)


# --- the guided scores themselves -----------------------------------------------

def test_bayes_rule_at_w1_gives_the_exact_conditional_score_at_any_sigma():
  x, sigma, labels = _points()
  guided = guidance.ClassifierGuidedScore(_continuous(), exact_classifier, labels, 1.0)
  # Float32 autodiff of float32 densities against float64 solves: the scores
  # are O(10), their round-off ~1e-5 relative; 1e-4 leaves a margin.
  np.testing.assert_allclose(guided.score_sigma(x, sigma).numpy(),
                             numpy_conditional_score(x, sigma, labels), rtol=1e-4, atol=1e-4)


def test_bayes_rule_holds_at_a_ladder_networks_levels():
  x, _, labels = _points(seed=1)
  index = (np.arange(len(x)) % len(SIGMAS)).astype(np.int32)
  ladder = ScoreModel(LadderNetwork(SIGMAS), SIGMAS, continuous=False)
  guided = guidance.ClassifierGuidedScore(ladder, exact_classifier, labels, 1.0)
  np.testing.assert_allclose(guided.score_index(x, index).numpy(),
                             numpy_conditional_score(x, SIGMAS[index], labels),
                             rtol=1e-4, atol=1e-4)


def test_guided_time_score_of_vp_is_the_conditional_marginal_score():
  """VP's p_t(x | y) = N(α μ_y, α² Σ_y + std² I): the guided score_t, which asks
  the base and the classifier at (x/α, σ(t)), must be its score in x."""
  sde = noise.VPSDE()
  x, _, labels = _points(seed=2)
  t = np.linspace(0.05, 1.0, len(x)).astype(np.float32)
  guided = guidance.ClassifierGuidedScore(_continuous(), exact_classifier, labels, 1.0)
  alpha, std = sde.mean_coeff(t).numpy(), sde.std(t).numpy()
  expected = np.stack([-np.linalg.solve(a * a * COVS[y] + s * s * np.eye(2), xn - a * MEANS[y])
                       for xn, a, s, y in zip(x, alpha, std, labels)])
  # 1/α reaches 150 at t = 1: the relative round-off of x/α and the division
  # back stays ~1e-5, the scores themselves are up to ~1e2.
  np.testing.assert_allclose(guided.score_t(x, t, sde).numpy(), expected, rtol=2e-4, atol=1e-4)


def test_zero_scale_leaves_the_scores_unguided_exactly():
  x, sigma, labels = _points(seed=3)
  base = _continuous()
  classifier_guided = guidance.ClassifierGuidedScore(base, exact_classifier, labels, 0.0)
  np.testing.assert_array_equal(classifier_guided.score_sigma(x, sigma).numpy(),
                                base.score_sigma(x, sigma).numpy())
  free = guidance.FreeGuidedScore(base, labels, 0.0)
  np.testing.assert_array_equal(free.score_sigma(x, sigma).numpy(),
                                base.with_labels(labels).score_sigma(x, sigma).numpy())


def test_classifier_free_guidance_is_the_weighted_difference_of_scores():
  x, sigma, labels = _points(seed=4)
  free = guidance.FreeGuidedScore(_continuous(), tf.constant(labels), tf.constant(2.0))
  expected = (3.0 * numpy_conditional_score(x, sigma, labels)
              - 2.0 * numpy_mixture_score(x, sigma))
  np.testing.assert_allclose(free.score_sigma(x, sigma).numpy(), expected, rtol=1e-4, atol=2e-4)


def test_the_classifier_gradient_is_the_conditional_minus_the_mixture_score():
  x, sigma, labels = _points(seed=5)
  guided = guidance.ClassifierGuidedScore(_continuous(), exact_classifier, labels, 1.0)
  expected = numpy_conditional_score(x, sigma, labels) - numpy_mixture_score(x, sigma)
  np.testing.assert_allclose(guided.log_prob_grad(x, sigma).numpy(), expected,
                             rtol=1e-4, atol=1e-4)


def test_guided_models_bind_their_methods_once():
  guided = guidance.ClassifierGuidedScore(_continuous(), exact_classifier, np.zeros(2, np.int32))
  assert guided.score_t is guided.score_t and guided.score_index is guided.score_index
  assert configured.as_score_model(guided, SIGMAS) is guided


# --- guided sampling: the class-conditional distribution -----------------------

def _config(model=None, **sampling):
  """A gmm toy config: the ladder SIGMAS (unless `model` overrides), the sampler settings."""
  model = {'sigma_begin': float(SIGMAS[0]), 'sigma_end': float(SIGMAS[-1]),
           'num_scales': len(SIGMAS), **(model or {})}
  return config_lib.Config(data=config_lib.DataConfig(dataset='gmm'),
                           model=config_lib.ModelConfig(**model),
                           sampling=config_lib.SamplingConfig(**sampling))


def _labels():
  return np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), PER_CLASS)


def _check_moments(samples, labels, expected_means, expected_covs):
  for k in range(NUM_CLASSES):
    ours = samples[labels == k].astype(np.float64)
    mean, cov = ours.mean(0), np.cov(ours.T)
    c = expected_covs[k]
    mean_se = np.sqrt(np.diag(c) / len(ours))
    cov_se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / len(ours))
    assert np.all(np.abs(mean - expected_means[k]) < MC_SIGMAS * mean_se), (k, mean, expected_means[k])
    assert np.all(np.abs(cov - c) < MC_SIGMAS * cov_se), (k, cov, c)


def _share_in_requested_component(samples, labels, sigma):
  posterior = tf.argmax(component_log_joint(samples, np.full(len(samples), sigma, np.float32)),
                        axis=-1, output_type=tf.int32).numpy()
  return float(np.mean(posterior == labels))


def _ald_moments(sigmas, n_steps_each, step_lr, radius):
  """Exact mean and covariance of annealed Langevin on each class's Gaussian score."""
  means, covs = [], []
  for k in range(NUM_CLASSES):
    m, c = np.zeros(2), np.eye(2) * radius**2 / 3.0   # U[-r, r]²
    for s in sigmas.astype(np.float64):
      eps = step_lr * (s / sigmas[-1])**2
      a = np.eye(2) - eps * np.linalg.inv(COVS[k] + s * s * np.eye(2))
      for _ in range(n_steps_each):
        m, c = MEANS[k] + a @ (m - MEANS[k]), a @ c @ a.T + 2.0 * eps * np.eye(2)
    means.append(m)
    covs.append(c)
  return means, covs


def test_guided_annealed_langevin_samples_each_class_of_a_ladder_network():
  from ncsn_tf.data import toy
  # ε_i = 0.8 σ_L² (σ_i/σ_L)²: ε_i/σ_i² = 0.8 < 2, stable at every level.
  n_steps_each, step_lr = 50, 0.8 * float(SIGMAS[-1])**2
  config = _config(sampler='ald', n_steps_each=n_steps_each, step_lr=step_lr)
  ladder = ScoreModel(LadderNetwork(SIGMAS), SIGMAS, continuous=False)
  labels = _labels()
  guided = guidance.ClassifierGuidedScore(ladder, exact_classifier, labels, 1.0)
  sampler = configured.ConfiguredSampler(config, guided, (2,))
  samples, _, _ = sampler.sample(len(labels), 0)
  samples = samples.numpy()
  means, covs = _ald_moments(SIGMAS, n_steps_each, step_lr, toy.get_toy('gmm').plot_radius)
  _check_moments(samples, labels, means, covs)
  for k in range(NUM_CLASSES):  # The exact chain ends near p_σL(x | y): within 3% of
    # N(μ_y, Σ_y + σ_L² I) (1.9% measured; the last levels' steps are too small to
    # finish mixing).
    target = COVS[k] + SIGMAS[-1]**2 * np.eye(2)
    np.testing.assert_allclose(covs[k], target, atol=0.03 * np.abs(target).max())
    np.testing.assert_allclose(means[k], MEANS[k], atol=1e-6)
  assert _share_in_requested_component(samples, labels, SIGMAS[-1]) >= 0.99


def _ode_moments(sde, eps):
  """Exact output moments of the probability-flow ODE on each class's Gaussian score,
  from the prior N(prior_mean, prior_std² I) at T to t = eps (module docstring)."""
  with tf.init_scope():
    sigma_end, sigma_max = sde.sigma_of_t([eps, sde.T]).numpy().astype(np.float64)
    alpha_end, alpha_max = sde.mean_coeff([eps, sde.T]).numpy().astype(np.float64)
  means, covs = [], []
  for k in range(NUM_CLASSES):
    values, vectors = np.linalg.eigh(COVS[k])
    m = vectors @ np.diag(np.sqrt((values + sigma_end**2) / (values + sigma_max**2))) @ vectors.T
    y_mean = np.full(2, float(sde.prior_mean)) / alpha_max          # y = x/α at T
    y_cov = np.eye(2) * (sde.prior_std / alpha_max)**2
    means.append(alpha_end * (MEANS[k] + m @ (y_mean - MEANS[k])))
    covs.append(alpha_end**2 * m @ y_cov @ m.T)
  return means, covs


@pytest.mark.parametrize('sde_name', ['ve', 'vp'])
def test_guided_probability_flow_ode_samples_each_class(sde_name):
  eps = 1e-3
  # VE from σ_max = 50: the prior N(0, 50² I) is off p_T(x | y) by the class mean,
  # which the flow shrinks by sqrt(Σ/σ_max²) to < 0.05 (VP's prior fits p_1 by itself).
  config = _config(sampler='ode', ode_rtol=1e-5, ode_atol=1e-5, sampling_eps=eps,
                   model={'sde': sde_name, 'noise_embedding': 'fourier', 'sigma_begin': 50.0})
  labels = _labels()
  guided = guidance.ClassifierGuidedScore(_continuous(), exact_classifier, labels, 1.0)
  sampler = configured.ConfiguredSampler(config, guided, (2,))
  samples, _, _ = sampler.sample(len(labels), 1)
  samples = samples.numpy()
  means, covs = _ode_moments(sampler.sde, eps)
  _check_moments(samples, labels, means, covs)
  with tf.init_scope():
    sigma_end = float(sampler.sde.sigma_of_t([eps])[0])
  for k in range(NUM_CLASSES):  # The exact flow ends at N(μ_y, Σ_y + σ(eps)² I) up to the
    # prior's mismatch with p_T(x | y), shrunk by sqrt(Σ / σ_max²) on the way.
    target = COVS[k] + sigma_end**2 * np.eye(2)
    np.testing.assert_allclose(covs[k], target, atol=0.03 * np.abs(target).max())
    np.testing.assert_allclose(means[k], MEANS[k], atol=0.05 * np.abs(MEANS[k]).max())
  assert _share_in_requested_component(samples, labels, sigma_end) >= 0.99


@pytest.mark.parametrize('sampler_name,settings', [
    ('pc', {'sampling_steps': 200}), ('heun', {'sampling_steps': 30})])
def test_every_sde_sampler_lands_in_the_requested_class(sampler_name, settings):
  """PC and Heun through score_t with classifier-free guidance at w = 0 (the exact
  conditional score): every sample in its own class's component."""
  config = _config(sampler=sampler_name, sampling_eps=1e-3,
                   model={'sde': 've', 'noise_embedding': 'fourier'}, **settings)
  labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), 200)
  free = guidance.FreeGuidedScore(_continuous(), labels, 0.0)
  samples, _, _ = configured.ConfiguredSampler(config, free, (2,)).sample(
      len(labels), 2)
  assert _share_in_requested_component(samples.numpy(), labels, 0.1) >= 0.99


# --- networks with labels, the losses, the trainer --------------------------------

def _randomised(net, seed=0):
  """`net` with every weight redrawn: the FiLM maps and the U-Net's last conv start
  at zero, which would hide what the labels do."""
  rng = np.random.default_rng(seed)
  net.set_weights([rng.normal(scale=0.3, size=w.shape).astype(np.float32)
                   for w in net.get_weights()])
  return net


def _label_networks():
  from ncsn_tf.models.mlp import ContinuousScoreMLP
  from ncsn_tf.models.unet import ScoreUNet
  rng = np.random.default_rng(0)
  mlp = ContinuousScoreMLP(data_dim=2, hidden_units=8, num_layers=2, label_classes=3).build_for()
  unet = ScoreUNet(ngf=4, sigmas=[20.0, 0.01], image_size=8, channels=1, norm='none',
                   continuous=True, label_classes=3).build_for()
  return [(_randomised(mlp), rng.normal(size=(4, 2)).astype(np.float32)),
          (_randomised(unet), rng.random((4, 8, 8, 1)).astype(np.float32))]


def test_class_conditional_networks_default_to_no_label_and_use_the_labels():
  sigma = np.array([0.02, 0.3, 2.0, 15.0], np.float32)
  for net, x in _label_networks():
    model = ScoreModel(net, SIGMAS, continuous=True)
    assert model.num_classes == 3
    unlabelled = net(x, sigma).numpy()
    # No labels is the "no label" row ∅ = C for every example, exactly.
    np.testing.assert_array_equal(unlabelled, net(x, sigma, labels=np.full(4, 3, np.int32)).numpy())
    zeros, ones = (np.full(4, k, np.int32) for k in (0, 1))
    assert not np.allclose(net(x, sigma, labels=zeros).numpy(), net(x, sigma, labels=ones).numpy())
    np.testing.assert_array_equal(model.with_labels(ones).score_sigma(x, sigma).numpy(),
                                  net(x, sigma, labels=ones).numpy())
    np.testing.assert_array_equal(model.score_sigma(x, sigma).numpy(), unlabelled)


def test_unconditional_networks_are_unchanged_and_refuse_labels():
  """label_classes=0 builds no embedding: the same variables as before labels
  existed, so existing checkpoints restore."""
  from ncsn_tf.models.mlp import ContinuousScoreMLP
  net = ContinuousScoreMLP(data_dim=2, hidden_units=8, num_layers=2).build_for()
  assert not any('label' in w.path for w in net.weights)
  assert len(net.weights) == 2 * 2 + 2 * 2 + 2   # dense, film (kernel, bias) per layer; head
  with pytest.raises(ValueError, match='not class-conditional'):
    net(np.zeros((1, 2), np.float32), np.ones(1, np.float32), labels=np.zeros(1, np.int32))
  with pytest.raises(ValueError, match='class-conditional'):
    ScoreModel(net, SIGMAS, continuous=True).with_labels(np.zeros(1, np.int32))
  with pytest.raises(ValueError, match='class-conditional'):
    guidance.FreeGuidedScore(ScoreModel(net, SIGMAS, continuous=True), np.zeros(1, np.int32))


def test_label_dropout_replaces_the_requested_share_by_no_label():
  from ncsn_tf import losses
  labels = np.arange(20000, dtype=np.int32) % 10
  kept = losses.drop_labels(labels, tf.constant([3, 4]), 0.2, 10).numpy()
  dropped = kept == 10
  np.testing.assert_array_equal(kept[~dropped], labels[~dropped])
  # Binomial share: standard error sqrt(0.2 · 0.8 / 20000) = 0.0028; 5 of them.
  assert abs(dropped.mean() - 0.2) < 5 * 0.0028
  np.testing.assert_array_equal(losses.drop_labels(labels, tf.constant([3, 4]), 0.0, 10), labels)


def test_continuous_dsm_with_labels_draws_the_same_noise_and_passes_the_labels():
  from ncsn_tf import losses
  x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
  labels = (np.arange(64) % 3).astype(np.int32)
  seen = []

  def score_fn(xx, sigma, yy=None):
    if yy is not None:
      seen.append(yy.numpy())
    return -xx / (1.0 + sigma[:, None]**2)

  seed = tf.constant([5, 6])
  plain, plain_index = losses.continuous_dsm_per_example(score_fn, x, SIGMAS, seed)
  labelled, index = losses.continuous_dsm_per_example(
      score_fn, x, SIGMAS, seed, labels=labels, label_dropout=0.5, num_classes=3)
  np.testing.assert_array_equal(labelled.numpy(), plain.numpy())  # Same times and noise.
  np.testing.assert_array_equal(index.numpy(), plain_index.numpy())
  expected = losses.drop_labels(labels, seed, 0.5, 3).numpy()
  np.testing.assert_array_equal(seen[0], expected)
  assert 0 < np.mean(expected == 3) < 1


def test_the_classifier_loss_is_the_cross_entropy_at_continuous_dsm_noise():
  from ncsn_tf import losses
  x = np.random.default_rng(1).normal(size=(32, 2)).astype(np.float32)
  labels = (np.arange(32) % 3).astype(np.int32)
  sde = noise.VPSDE()
  seed = tf.constant([7, 8])
  # Logits that expose what the classifier was shown: (x̃_0, x̃_1, log σ).
  logits_fn = lambda xx, ss: tf.concat([xx, tf.math.log(ss)[:, None]], axis=1)  # noqa: E731
  loss, index, correct = losses.classifier_per_example(logits_fn, x, labels, SIGMAS, seed, sde=sde)
  _, sigma, z, _ = losses.continuous_noise_levels(x, SIGMAS, seed, sde=sde)
  logits = np.concatenate([x + sigma.numpy()[:, None] * z.numpy(),
                           np.log(sigma.numpy())[:, None]], axis=1).astype(np.float64)
  log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(loss.numpy(), -log_softmax[np.arange(32), labels], rtol=1e-5)
  np.testing.assert_array_equal(correct.numpy(), (logits.argmax(1) == labels).astype(np.float32))
  np.testing.assert_array_equal(
      index.numpy(), np.abs(np.log(sigma.numpy())[:, None] - np.log(SIGMAS)[None]).argmin(1))


def test_accuracy_buckets_weight_levels_by_their_examples():
  from ncsn_tf.training import heldout
  sigmas = np.geomspace(10, 0.1, 4)
  buckets = heldout.accuracy_buckets(np.array([1.0, np.nan, 0.5, 0.0]),
                                       np.array([2, 0, 4, 4]), sigmas, num_buckets=2)
  assert buckets == [(10.0, sigmas[1], 1.0, 2), (sigmas[2], 0.1, 0.25, 8)]


def _digits_config(workdir, *overrides, **train):
  model = {'name': 'unet', 'ngf': 4, 'unet_norm': 'none', 'noise_embedding': 'fourier',
           'sde': 've', 'sigma_begin': 20.0, 'sigma_end': 0.01, 'num_scales': 10}
  sampling = {'sampler': 'heun', 'sampling_steps': 3, 'sampling_eps': 1e-5, 'summary_samples': 0,
              'sample_batch_size': 4}
  for group, values in overrides:
    (model if group == 'model' else sampling).update(values)
  return config_lib.validate(config_lib.Config(
      name='digits_tiny', workdir=str(workdir),
      data=config_lib.DataConfig(dataset='digits', image_size=16, random_flip=False),
      model=config_lib.ModelConfig(**model),
      train=config_lib.TrainConfig(**{'loss': 'continuous_dsm', 'batch_size': 8,
                                      'train_steps': 4, 'snapshot_freq': 2, 'log_freq': 2,
                                      'heldout_batches': 1, 'ema_rate': 0.9, **train}),
      sampling=config_lib.SamplingConfig(**sampling),
      export=config_lib.ExportConfig(str(workdir) + '_export')))


@pytest.fixture(scope='module')
def trained_classifier(tmp_path_factory):
  from ncsn_tf.training import loop as train_loop
  # MirroredStrategy on the two logical CPUs of conftest: labelled batches per replica.
  config = _digits_config(tmp_path_factory.mktemp('guidance') / 'classifier', task='classifier',
                          num_cpu_replicas=2)
  return config, train_loop.train(config)


def test_a_tiny_classifier_trains_through_the_trainer_and_restores(trained_classifier):
  from tensorboard.backend.event_processing import event_accumulator
  config, state = trained_classifier
  assert int(state.step.numpy()) == 4 and state.model.num_classes == 10
  acc = event_accumulator.EventAccumulator(f'{config.workdir}/tensorboard',
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  assert {'loss', 'eval/heldout_loss', 'eval/heldout_accuracy'} <= tags
  assert any(t.startswith('eval/heldout_accuracy_per_sigma/') for t in tags)
  accuracy = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors('eval/heldout_accuracy')]
  assert [e.step for e in acc.Tensors('eval/heldout_accuracy')] == [2, 4]
  assert all(0.0 <= a <= 1.0 for a in accuracy)
  # Restored from its workdir as guidance restores it: the EMA weights, the same logits.
  sampling = ('sampling', {'guidance': 'classifier', 'classifier_workdir': config.workdir})
  classifier = guidance.load_classifier(_digits_config(config.workdir + '_score', sampling))
  x = np.random.default_rng(0).random((3, 16, 16, 1)).astype(np.float32)
  sigma = np.array([0.01, 1.0, 20.0], np.float32)
  assert classifier.num_classes == 10
  np.testing.assert_array_equal(classifier(x, sigma).numpy(), state.ema_model(x, sigma).numpy())


@pytest.mark.slow
def test_a_class_conditional_network_trains_and_samples_each_class(trained_classifier, tmp_path):
  """Two steps with label dropout, then free and classifier guidance through Heun
  (~30 s, mostly tracing the U-Net; the labelled objective, draw_guided_samples and
  both guided models are covered quickly below and above)."""
  from ncsn_tf.training import loop as train_loop
  classifier_config, _ = trained_classifier
  config = _digits_config(tmp_path / 'score', ('model', {'class_conditional': True}),
                          ('sampling', {'guidance': 'free'}), train_steps=2)
  state = train_loop.train(config)
  embedding = state.model.label_embedding.embeddings.numpy()
  assert embedding.shape == (11, 16)  # 10 digits + ∅, the U-Net's 4·ngf embedding width.
  labels = np.array([0, 3, 9], np.int32)
  samples, _ = guidance.draw_guided_samples(config, state.score_model, labels, seed=0,
                                            show_progress=False)
  assert samples.shape == (3, 16, 16, 1) and np.all(np.isfinite(samples))
  classifier = guidance.load_classifier(config.replace(sampling={
      'guidance': 'classifier', 'classifier_workdir': classifier_config.workdir}))
  guided = config.replace(sampling={'guidance': 'classifier'})
  with_classifier, _ = guidance.draw_guided_samples(guided, state.score_model, labels, seed=0,
                                                    classifier=classifier, show_progress=False)
  assert with_classifier.shape == samples.shape and not np.allclose(with_classifier, samples)


def test_the_class_conditional_objective_passes_the_batch_labels_with_dropout(tmp_path):
  from ncsn_tf import losses
  from ncsn_tf.training import step as train_step
  config = _digits_config(tmp_path / 'run', ('model', {'class_conditional': True}),
                          label_dropout=0.3)
  assert train_step.needs_labels(config)
  seen = {}

  def network(x, sigma, labels=None, training=False):
    seen.update(labels=labels.numpy(), training=training)
    return -x / (1.0 + sigma[:, None, None, None]**2)

  x = np.random.default_rng(0).random((16, 16, 16, 1)).astype(np.float32)
  labels = (np.arange(16) % 10).astype(np.int32)
  seed = tf.constant([1, 2])
  loss, index, correct = train_step.objective_for(config, network, training=True)(
      (x, labels), SIGMAS, seed)
  assert correct is None and loss.shape == (16,) and index.shape == (16,)
  np.testing.assert_array_equal(seen['labels'], losses.drop_labels(labels, seed, 0.3, 10))
  assert seen['training'] is True


def _toy_conditional_config(**sampling):
  return _config(model={'sde': 've', 'noise_embedding': 'fourier', 'sigma_begin': 50.0},
                 sampler='heun', sampling_steps=12, sampling_eps=1e-3, **sampling)


def test_draw_guided_samples_gives_every_batch_its_own_labels():
  """Three batches (class 1; half 1, half 0; class 0) through one traced sampler:
  the label variable is reassigned per batch, and each sample lands in its
  label's component."""
  labels = guidance.class_labels(-1, NUM_CLASSES, 60)[::-1].copy()   # 30 of class 1, then 0
  for kind, classifier in (('free', None), ('classifier', exact_classifier)):
    config = _toy_conditional_config(guidance=kind, guidance_scale=0.0 if kind == 'free' else 1.0,
                                     sample_batch_size=20)
    samples, trajectory = guidance.draw_guided_samples(config, _continuous(), labels, seed=3,
                                                       classifier=classifier, show_progress=False)
    assert samples.shape == (60, 2) and trajectory.shape == (1, 60, 2)
    assert _share_in_requested_component(samples, labels, 0.05) >= 0.99


def test_the_exported_sample_class_checks_its_inputs_and_guides():
  """`sample_class` of a class-conditional network (classifier-free), in process;
  tests/test_serving.py serves the classifier-guided one through both loaders."""
  from ncsn_tf.serving import module as serving_module
  # Annealed Langevin on the ladder (no --sde, so no log_likelihood to trace).
  config = _config(sampler='ald', n_steps_each=20, step_lr=0.8 * float(SIGMAS[-1])**2)
  module = serving_module.ScoreModule(_continuous(), config, SIGMAS)
  assert 'sample_class' in module.signatures()
  labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), 20)
  samples = module.sample_class(labels, tf.constant(0.0), tf.constant(4))['samples'].numpy()
  assert _share_in_requested_component(samples, labels, 0.05) >= 0.99
  for bad_labels, scale in (([0, 2], 1.0), ([-1], 1.0), ([1], -0.5)):
    with pytest.raises(tf.errors.InvalidArgumentError, match='sample_class: '):
      module.sample_class(np.array(bad_labels, np.int32), tf.constant(scale), tf.constant(0))
  unconditional = ScoreModel(LadderNetwork(SIGMAS), SIGMAS, continuous=False)
  assert 'sample_class' not in serving_module.ScoreModule(unconditional, _config(), SIGMAS).signatures()


def test_class_labels_of_one_class_or_a_grid():
  np.testing.assert_array_equal(guidance.class_labels(4, 10, 3), [4, 4, 4])
  np.testing.assert_array_equal(guidance.class_labels(-1, 3, 5), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize('overrides,message', [
    ({'sampling': {'guidance': 'free', 'class_label': 10}}, '--class_label: must be -1'),
    ({'sampling': {'guidance': 'free', 'class_label': -2}}, '--class_label: must be -1'),
    ({'sampling': {'guidance': 'free'}}, '--guidance: free .* needs a class-conditional'),
    ({'sampling': {'guidance': 'classifier'}}, '--classifier_workdir: is required'),
    ({'sampling': {'guidance': 'classifier', 'classifier_workdir': '/nonexistent'}},
     '--classifier_workdir: .* holds no config.json'),
    ({'sampling': {'guidance_scale': -0.5}}, '--guidance_scale: must be >= 0'),
    ({'data': {'dataset': 'gmm'}, 'model': {'name': 'mlp'}, 'sampling': {'guidance': 'free'}},
     '--guidance: --dataset=gmm has no class labels'),
    ({'data': {'dataset': 'gmm'}, 'model': {'name': 'mlp'}, 'train': {'task': 'classifier'}},
     '--task: classifier needs labels'),
    ({'model': {'class_conditional': True, 'noise_embedding': 'ladder', 'sde': 'none'},
      'train': {'loss': 'anneal_dsm'}, 'sampling': {'sampler': 'ald'}},
     '--class_conditional: needs a continuous-σ network'),
    ({'train': {'label_dropout': 1.0}}, '--label_dropout: must be in'),
    ({'mode': 'sample', 'train': {'task': 'classifier'}}, '--mode: --task=classifier trains'),
])
def test_bad_guidance_settings_fail_in_one_line(overrides, message, tmp_path):
  base = _digits_config(tmp_path / 'run')
  groups = {k: v for k, v in overrides.items() if k != 'mode'}
  config = base.replace(**groups, **({'mode': overrides['mode']} if 'mode' in overrides else {}))
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.validate(config)
  assert '\n' not in str(error.value)


def test_a_classifier_workdir_of_other_data_or_not_a_classifier_is_refused(trained_classifier,
                                                                            tmp_path):
  classifier_config, _ = trained_classifier
  other = _digits_config(tmp_path / 'run').replace(data={'image_size': 8})
  with pytest.raises(config_lib.ConfigError, match='classified other data'):
    config_lib.validate(other.replace(sampling={'guidance': 'classifier',
                                                'classifier_workdir': classifier_config.workdir}))
  score_run = _digits_config(tmp_path / 'score')
  # What validation reads of a score run's workdir: its config.json and checkpoint index.
  (tmp_path / 'score' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'score' / 'checkpoints' / 'checkpoint').write_text('model_checkpoint_path: "ckpt-1"\n')
  (tmp_path / 'score' / 'config.json').write_text(score_run.to_json())
  with pytest.raises(config_lib.ConfigError, match='is not a --task=classifier run'):
    config_lib.validate(score_run.replace(workdir=str(tmp_path / 'x'), sampling={
        'guidance': 'classifier', 'classifier_workdir': score_run.workdir}))
