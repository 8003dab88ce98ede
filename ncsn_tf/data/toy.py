"""Toy 2-D distributions with exact log-densities and exact scores.

Built from TensorFlow Probability distributions so that `log_prob` is exact;
the scores are written in closed form and tested against autodiff of
`log_prob`. For Gaussian mixtures the σ-perturbed density
p_σ = p * N(0, σ²I) is again a Gaussian mixture (every covariance plus σ²I),
so its score is exact too; that is what a noise-conditional network learns at
level σ, which makes these the ground truth for validating NCSN end to end.

Every `x` below is float32 [N, D]; scores have the same shape; `log_prob`
returns [N].
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class ToyDistribution:
  """Interface of a toy distribution with an exact score."""

  #: Short name used by `--dataset` and in figures.
  name = 'toy'
  #: Whether `perturbed_score` has a closed form.
  has_perturbed_score = False
  #: A square [-r, r]^2 that holds nearly all of the mass, for plots and
  #: sampler initialisation.
  plot_radius = 8.0

  @property
  def dim(self) -> int:
    raise NotImplementedError

  def sample(self, num: int, seed) -> tf.Tensor:
    """`num` i.i.d. samples [num, D], from a stateless `seed` (shape [2] int)."""
    raise NotImplementedError

  def log_prob(self, x) -> tf.Tensor:
    raise NotImplementedError

  def score(self, x) -> tf.Tensor:
    """∇_x log p(x), exact."""
    raise NotImplementedError

  def perturbed_score(self, x, sigma) -> tf.Tensor:
    """∇_x log p_σ(x) for p_σ = p * N(0, σ²I); `sigma` scalar or [N]."""
    raise NotImplementedError(f'{self.name} has no closed-form perturbed score')


class GaussianMixture(ToyDistribution):
  """K-component Gaussian mixture with full covariances.

  Args:
    weights: [K] mixture weights, positive, summing to 1.
    means: [K, D] component means.
    covariances: [K, D, D] symmetric positive-definite covariances.
  """

  name = 'gmm'
  has_perturbed_score = True

  def __init__(self, weights, means, covariances, plot_radius: float = 8.0):
    weights = np.asarray(weights, np.float64)
    means = np.asarray(means, np.float64)
    covariances = np.asarray(covariances, np.float64)
    if weights.ndim != 1 or means.ndim != 2 or covariances.ndim != 3:
      raise ValueError('weights, means, covariances must be [K], [K, D], [K, D, D]')
    k, d = means.shape
    if weights.shape != (k,) or covariances.shape != (k, d, d):
      raise ValueError(f'shape mismatch: weights {weights.shape}, means {means.shape}, '
                       f'covariances {covariances.shape}')
    if np.any(weights <= 0) or abs(weights.sum() - 1) > 1e-6:
      raise ValueError(f'weights must be positive and sum to 1, got {weights}')
    np.linalg.cholesky(covariances)  # Raises LinAlgError unless positive-definite.
    self.weights = weights.astype(np.float32)
    self.means = means.astype(np.float32)
    self.covariances = covariances.astype(np.float32)
    self.plot_radius = plot_radius

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  @property
  def num_components(self) -> int:
    return self.means.shape[0]

  def distribution(self, sigma: float = 0.0) -> tfd.Distribution:
    """The TFP mixture, optionally perturbed by N(0, σ²I)."""
    cov = self.covariances + np.float32(sigma)**2 * np.eye(self.dim, dtype=np.float32)
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(probs=self.weights),
        components_distribution=tfd.MultivariateNormalTriL(
            loc=self.means, scale_tril=tf.linalg.cholesky(cov)))

  def sample(self, num: int, seed) -> tf.Tensor:
    return self.distribution().sample(num, seed=tf.cast(seed, tf.int32))

  def perturbed_log_prob(self, x, sigma: float) -> tf.Tensor:
    """log p_σ(x) for a scalar σ: the mixture with every covariance plus σ²I."""
    return self.distribution(sigma).log_prob(x)

  def log_prob(self, x) -> tf.Tensor:
    return self.distribution().log_prob(x)

  def score(self, x) -> tf.Tensor:
    return self.perturbed_score(x, 0.0)

  def perturbed_score(self, x, sigma) -> tf.Tensor:
    """Closed form: Σ_k r_k(x) · (−Σ_k(σ)^{-1} (x − μ_k)), Σ_k(σ) = Σ_k + σ²I.

    r_k(x) are the posterior component probabilities under p_σ. `sigma` may be
    a scalar or one σ per example ([N]).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    sigma = tf.cast(sigma, tf.float32)
    sigma = tf.broadcast_to(tf.reshape(sigma, [-1]), [tf.shape(x)[0]])
    eye = tf.eye(self.dim)
    # [N, K, D, D]: each example's own perturbed covariances.
    cov = self.covariances[None] + (sigma**2)[:, None, None, None] * eye
    chol = tf.linalg.cholesky(cov)
    diff = x[:, None, :] - self.means[None]                      # [N, K, D]
    # Σ^{-1}(x − μ) through two triangular solves (stable, no explicit inverse).
    precision_diff = tf.linalg.cholesky_solve(chol, diff[..., None])[..., 0]
    mahalanobis = tf.reduce_sum(diff * precision_diff, axis=-1)  # [N, K]
    log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)
    log_joint = tf.math.log(self.weights)[None] - 0.5 * (mahalanobis + log_det)
    responsibilities = tf.nn.softmax(log_joint, axis=-1)          # [N, K]
    return -tf.reduce_sum(responsibilities[..., None] * precision_diff, axis=1)

  def nearest_component(self, x) -> tf.Tensor:
    """Index [N] of the nearest mean (Euclidean), to read off mode weights."""
    dist = tf.reduce_sum((x[:, None, :] - self.means[None])**2, axis=-1)
    return tf.argmin(dist, axis=-1, output_type=tf.int32)


def paper_mixture() -> GaussianMixture:
  """The mixture of Song & Ermon (2019), section 3.2 (and the official toy code).

  p = 0.2 · N((−5, −5), I) + 0.8 · N((5, 5), I).
  """
  return GaussianMixture(weights=[0.2, 0.8],
                         means=[[-5.0, -5.0], [5.0, 5.0]],
                         covariances=[np.eye(2), np.eye(2)])


class Banana(ToyDistribution):
  """The banana (twisted Gaussian) of Haario et al. (1999).

  x_1 ~ N(0, s_1²), x_2 | x_1 ~ N(b (x_1² − s_1²), s_2²). The map from the
  untwisted Gaussian has unit Jacobian, so log p is the sum of two normal
  log-densities and the score is exact; the perturbed score has no closed form.
  """

  name = 'banana'

  def __init__(self, s1: float = 2.0, s2: float = 1.0, curvature: float = 0.4,
               shift: float = -2.0, plot_radius: float = 8.0):
    if s1 <= 0 or s2 <= 0:
      raise ValueError('banana scales must be positive')
    self.s1, self.s2, self.curvature, self.shift = float(s1), float(s2), float(curvature), float(shift)
    self.plot_radius = plot_radius
    self._x1 = tfd.Normal(0.0, self.s1)
    self._x2_given_x1 = tfd.Normal(0.0, self.s2)

  @property
  def dim(self) -> int:
    return 2

  def _twist(self, x1):
    # The conditional mean of x_2; `shift` centres the banana in the plot box.
    return self.curvature * (x1**2 - self.s1**2) + self.shift

  def sample(self, num: int, seed) -> tf.Tensor:
    z = tf.random.stateless_normal([num, 2], seed=tf.cast(seed, tf.int32))
    x1 = self.s1 * z[:, 0]
    x2 = self._twist(x1) + self.s2 * z[:, 1]
    return tf.stack([x1, x2], axis=-1)

  def log_prob(self, x) -> tf.Tensor:
    x = tf.convert_to_tensor(x, tf.float32)
    x1, x2 = x[:, 0], x[:, 1]
    return self._x1.log_prob(x1) + self._x2_given_x1.log_prob(x2 - self._twist(x1))

  def score(self, x) -> tf.Tensor:
    x = tf.convert_to_tensor(x, tf.float32)
    x1, x2 = x[:, 0], x[:, 1]
    u = x2 - self._twist(x1)
    d_x2 = -u / self.s2**2
    d_x1 = -x1 / self.s1**2 - d_x2 * 2.0 * self.curvature * x1
    return tf.stack([d_x1, d_x2], axis=-1)


class Rings(ToyDistribution):
  """Concentric rings: a mixture of uniform circles of radii r_k blurred by N(0, w²I).

  x = r_k (cos θ, sin θ) + w z with k ~ π, θ ~ U[0, 2π), z ~ N(0, I). Each ring's
  density is the Rice density
      p_k(x) = exp(−(‖x‖² + r_k²) / (2w²)) · I_0(r_k‖x‖ / w²) / (2π w²),
  so log p and the score are exact (through exponentially scaled Bessel
  functions, stable for large arguments). Convolving with N(0, σ²I) only adds
  σ² to w², so the perturbed score has a closed form too.

  Args:
    radii: [K] ring radii r_k >= 0.
    weights: [K] positive weights summing to 1.
    width: the Gaussian blur w > 0.
  """

  name = 'rings'
  has_perturbed_score = True

  def __init__(self, radii=(2.0, 4.5), weights=(0.4, 0.6), width: float = 0.25,
               plot_radius: float = 6.5):
    radii = np.asarray(radii, np.float64)
    weights = np.asarray(weights, np.float64)
    if radii.ndim != 1 or weights.shape != radii.shape or np.any(radii < 0):
      raise ValueError(f'radii and weights must be [K] with radii >= 0, got {radii}, {weights}')
    if np.any(weights <= 0) or abs(weights.sum() - 1) > 1e-6:
      raise ValueError(f'weights must be positive and sum to 1, got {weights}')
    if width <= 0:
      raise ValueError(f'width must be > 0, got {width}')
    self.radii = radii.astype(np.float32)
    self.weights = weights.astype(np.float32)
    self.width = float(width)
    self.plot_radius = plot_radius

  @property
  def dim(self) -> int:
    return 2

  def sample(self, num: int, seed) -> tf.Tensor:
    ring_seed, angle_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 3))
    k = tf.random.stateless_categorical(tf.math.log(self.weights)[None], num, ring_seed)[0]
    theta = tf.random.stateless_uniform([num], angle_seed, 0.0, 2.0 * np.pi)
    circle = tf.gather(self.radii, k)[:, None] * tf.stack([tf.cos(theta), tf.sin(theta)], -1)
    return circle + self.width * tf.random.stateless_normal([num, 2], noise_seed)

  def _log_components(self, x, variance):
    """[N, K] log π_k p_k(x) at blur variance w² (+σ²); variance scalar or [N, 1]."""
    r = tf.norm(x, axis=-1, keepdims=True)                                  # [N, 1]
    arg = r * self.radii[None] / variance                                   # [N, K]
    # log I_0(a) = log(i0e(a)) + a, exact and overflow-free.
    return (tf.math.log(self.weights)[None] - (r - self.radii[None])**2 / (2.0 * variance)
            + tf.math.log(tf.math.special.bessel_i0e(arg)) - tf.math.log(2.0 * np.pi * variance))

  def perturbed_log_prob(self, x, sigma) -> tf.Tensor:
    """log p_σ(x), p_σ = p * N(0, σ²I): the same rings with w² + σ²."""
    x = tf.convert_to_tensor(x, tf.float32)
    variance = self.width**2 + tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])**2
    return tf.reduce_logsumexp(self._log_components(x, variance), axis=-1)

  def log_prob(self, x) -> tf.Tensor:
    return self.perturbed_log_prob(x, 0.0)

  def score(self, x) -> tf.Tensor:
    return self.perturbed_score(x, 0.0)

  def perturbed_score(self, x, sigma) -> tf.Tensor:
    """Σ_k r_k(x) · (−x + r_k (I_1/I_0)(r_k‖x‖/v) x/‖x‖) / v, v = w² + σ²."""
    x = tf.convert_to_tensor(x, tf.float32)
    variance = self.width**2 + tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])**2
    responsibilities = tf.nn.softmax(self._log_components(x, variance), axis=-1)  # [N, K]
    r = tf.norm(x, axis=-1, keepdims=True)
    arg = r * self.radii[None] / variance
    bessel_ratio = tf.math.special.bessel_i1e(arg) / tf.math.special.bessel_i0e(arg)
    # r_k I1/I0 / ‖x‖ stays finite as ‖x‖ -> 0 (I_1(a) ~ a/2): use the limit there.
    radial = tf.where(r > 1e-6, self.radii[None] * bessel_ratio / tf.maximum(r, 1e-6),
                      self.radii[None]**2 / (2.0 * variance))
    pull = tf.reduce_sum(responsibilities * radial, axis=-1, keepdims=True)
    return (pull - 1.0) * x / variance


def grid_mixture(n_per_side: int = 5, spacing: float = 2.0, std: float = 0.25) -> GaussianMixture:
  """25 (5×5) equal-weight isotropic Gaussians on a square grid centred at 0."""
  axis = (np.arange(n_per_side) - (n_per_side - 1) / 2) * spacing
  means = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  k = len(means)
  mixture = GaussianMixture(np.full(k, 1.0 / k), means, np.tile(std**2 * np.eye(2), (k, 1, 1)),
                            plot_radius=float(axis[-1] + 2.0))
  mixture.name = 'grid'
  return mixture


def circle_mixture(num: int = 8, radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
  """8 equal-weight isotropic Gaussians evenly spaced on a circle."""
  angles = 2.0 * np.pi * np.arange(num) / num
  means = radius * np.stack([np.cos(angles), np.sin(angles)], -1)
  mixture = GaussianMixture(np.full(num, 1.0 / num), means,
                            np.tile(std**2 * np.eye(2), (num, 1, 1)), plot_radius=radius + 2.5)
  mixture.name = 'gmm8'
  return mixture


def perturbed_score_mc(dist: ToyDistribution, x, sigma: float, *, num: int = 8192, seed=(0, 0)):
  """A Monte Carlo estimate of ∇log p_σ(x) for any toy (for those without a closed form).

  ∇log p_σ(x̃) = E[(y − x̃)/σ² | x̃] with the posterior p(y | x̃) ∝ p(y) N(x̃; y, σ²I);
  self-normalised importance sampling with `num` draws y ~ p. Biased for small
  σ (few draws land near x̃); the lab uses it for the banana at σ_L only.
  """
  x = tf.convert_to_tensor(x, tf.float32)
  y = dist.sample(num, seed=seed)                                         # [M, D]
  sq = tf.reduce_sum((x[:, None, :] - y[None])**2, axis=-1)               # [N, M]
  w = tf.nn.softmax(-sq / (2.0 * sigma**2), axis=-1)
  return (tf.matmul(w, y) - x) / sigma**2


#: `--dataset` name -> constructor. Closed-form perturbed score (`has_perturbed_score`):
#: gmm, grid, gmm8 (Gaussian mixtures) and rings (Rice mixture); not banana.
TOY_DISTRIBUTIONS = {
    'gmm': paper_mixture,
    'banana': Banana,
    'rings': Rings,
    'grid': grid_mixture,
    'gmm8': circle_mixture,
}


def get_toy(name: str) -> ToyDistribution:
  """The toy distribution registered under `name` (see TOY_DISTRIBUTIONS)."""
  try:
    return TOY_DISTRIBUTIONS[name]()
  except KeyError:
    raise ValueError(f'unknown toy distribution {name!r}; '
                     f'choose from {sorted(TOY_DISTRIBUTIONS)}') from None


def toy_dataset(dist: ToyDistribution, *, batch_size: int, seed: int, start_batch: int = 0,
                input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
  """An endless dataset of fresh batches [batch_size, D] drawn from `dist`.

  Batch k is a pure function of (seed, replica pipeline, k), so the stream is
  reproducible, each replica draws different data, and a resumed run starts
  at `start_batch` (its global step) to see exactly the batches it would have.
  """
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  return tf.data.Dataset.counter(start_batch).map(
      lambda k: dist.sample(batch_size, seed=tf.stack([tf.cast(seed, tf.int64) * 1000 + pipeline_id, k])),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
