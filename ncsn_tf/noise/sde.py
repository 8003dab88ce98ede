"""Noise processes: the score SDEs (Song et al. 2021, appendix B), and their registry.

One small class per process. An SDE dx = f(x, t) dt + g(t) dw on t ∈ [0, T]
perturbs data x_0 into x_t with the Gaussian kernel

    x_t | x_0 ~ N(α(t) x_0, std(t)² I)        (`marginal`),

and ends near a tractable prior (`prior_sample`, `prior_log_prob`). Sampling
runs it backwards with the score s = ∇ log p_t (`reverse_drift`).

Every process also has an equivalent noise level σ(t) = std(t)/α(t)
(`sigma_of_t`, inverse `t_of_sigma`): x_t/α(t) is the data plus N(0, σ(t)² I)
noise, so one σ-parameterised score model s(y, σ) serves all three SDEs
through ∇_x log p_t(x) = s(x/α, σ(t))/α, and Heun's σ schedule maps to times.

Shapes: x is float32 [N, ...]; t is float32 [N] in [0, T], one time per example,
broadcast over the data axes; per-example coefficients (diffusion, std, α, σ)
are float32 [N]. No absl, no state: the classes hold only their constants.

`build_sde(model_config)` is where --sde becomes an SDE; `register_sde(name,
build)` adds one (an --extensions module can: docs/extending.md).
"""

import functools

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib


def _check(condition, message):
  if not condition:
    raise ValueError(message)


def expand_to(v, x):
  """Reshape per-example v [N] to [N, 1, ..., 1] so it broadcasts against x [N, ...]."""
  v = tf.convert_to_tensor(v, tf.float32)
  return tf.reshape(v, tf.concat([tf.shape(v), tf.ones([tf.rank(x) - 1], tf.int32)], 0))


class SDE:
  """What every noise process offers; subclasses define the closed forms.

  Subclasses implement `sde`, `mean_coeff`, `std`, `t_of_sigma` and
  `discretize`, and set `prior_std`. `prior_mean` (default 0) centres the
  prior; see VESDE for why one would move it.
  """

  #: score_sde's default end time of sampling, t = eps > 0 (the score blows up at t = 0).
  default_sampling_eps = 1e-3
  prior_std = 1.0
  prior_mean = 0.0

  def __init__(self, T: float):
    _check(T > 0, f'the SDE end time T must be > 0, got {T}')
    self.T = float(T)

  def sampling_eps(self, eps=None) -> float:
    """The end time of sampling: `eps` checked to lie in (0, 1) and below T, or the default."""
    eps = self.default_sampling_eps if eps is None else eps
    _check(0 < eps < min(1.0, self.T), f'sampling_eps must be in (0, 1) and < T={self.T:g}, got {eps}')
    return float(eps)

  def sde(self, x, t):
    """(drift f(x, t) float32 [N, ...], diffusion g(t) float32 [N])."""
    raise NotImplementedError

  def mean_coeff(self, t):
    """α(t) float32 [N], the kernel's mean factor: E[x_t | x_0] = α(t) x_0; α(0) = 1."""
    raise NotImplementedError

  def std(self, t):
    """The kernel's std(t) float32 [N] (per coordinate)."""
    raise NotImplementedError

  def t_of_sigma(self, sigma):
    """The time t [N] whose equivalent noise σ(t) is `sigma` [N] (inverse of sigma_of_t)."""
    raise NotImplementedError

  def discretize(self, x, t, dt):
    """One discrete forward step from t − dt to t: x_t = x_{t−dt} + f + G z.

    Args:
      x: float32 [N, ...], the state at t (the coefficients are taken there,
        as in score_sde; f is linear in x, so evaluating it at either end is
        the same first-order scheme).
      t: float32 [N] in (0, T].
      dt: positive step, float or float32 [N], <= t.

    Returns:
      (f float32 [N, ...], G float32 [N]). The step count is not a property
      of the SDE (score_sde fixes N in the constructor); the step comes in as
      dt, so one SDE object serves any number of steps.
    """
    raise NotImplementedError

  def marginal(self, x0, t):
    """(mean α(t) x0 float32 [N, ...], std(t) float32 [N]) of x_t given x_0 = x0."""
    x0 = tf.convert_to_tensor(x0, tf.float32)
    return expand_to(self.mean_coeff(t), x0) * x0, self.std(t)

  def sigma_of_t(self, t):
    """Equivalent noise level σ(t) = std(t)/α(t), float32 [N], increasing in t."""
    return self.std(t) / self.mean_coeff(t)

  def reverse_drift(self, x, t, score, probability_flow: bool = False):
    """Drift of the reverse-time SDE f − g² s, or of the probability-flow ODE f − ½ g² s.

    Both are written as dx/dt in forward time (integrate them with dt < 0 to
    go from T towards 0). `score` is ∇ log p_t(x) [N, ...]; returns [N, ...].
    """
    drift, diffusion = self.sde(x, t)
    weight = 0.5 if probability_flow else 1.0
    return drift - weight * expand_to(diffusion**2, x) * score

  def prior_sample(self, shape, seed):
    """Draws from the prior N(prior_mean, prior_std² I): float32 `shape` [N, ...].

    `seed` is a stateless seed, int32 [2]: the same seed gives the same draw.
    """
    z = tf.random.stateless_normal(shape, tf.cast(seed, tf.int32))
    return self.prior_mean + self.prior_std * z

  def prior_log_prob(self, z):
    """log N(z; prior_mean, prior_std² I) summed over the non-batch axes: float32 [N]."""
    z = tf.convert_to_tensor(z, tf.float32)
    axes = tf.range(1, tf.rank(z))
    dim = tf.cast(tf.reduce_prod(tf.shape(z)[1:]), tf.float32)
    squared = tf.reduce_sum(((z - self.prior_mean) / self.prior_std)**2, axis=axes)
    return -0.5 * squared - 0.5 * dim * np.log(2.0 * np.pi * self.prior_std**2)


class VESDE(SDE):
  """Variance exploding: dx = sqrt(d σ(t)²/dt) dw, σ(t) = σ_min (σ_max/σ_min)^(t/T).

  NCSN's geometric ladder is this SDE seen at t_i (see `Ladder`). Drift 0,
  g(t) = σ(t) sqrt(2 log(σ_max/σ_min)/T), α = 1.

  Marginal std: σ(t), as in score_sde, not the exact sqrt(σ(t)² − σ_min²) of
  the SDE started at clean data. The convention reads x_0 as data already
  carrying σ_min noise (p_0 = p_data * N(0, σ_min²), ≈ p_data for small
  σ_min), so that x_t is the data plus N(0, σ(t)²) noise: exactly what a
  σ-conditioned score network and the ladder's DSM train on, and what keeps
  σ(t) equal to the equivalent noise level, on the ladder at t_i.

  The prior is N(prior_mean, σ_max² I). With prior_mean = 0 (score_sde's
  choice) it is off p_T by the data mean; deterministic samplers (the ODE,
  Heun) cannot correct that and carry the offset into the mode weights
  (on the paper's mixture at σ_max = 20 the ODE gave 0.26 for a true 0.2:
  docs/sde.md "The prior"; tests/test_sde_samplers.py shows it with exact scores). Pass the data mean (a scalar or an array of one example's shape)
  to centre it, or choose σ_max well above the data's spread.
  """

  default_sampling_eps = 1e-5

  def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0,
               prior_mean=0.0):
    super().__init__(T)
    _check(0 < sigma_min < sigma_max,
           f'VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}')
    self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
    self.prior_std = self.sigma_max
    self.prior_mean = np.asarray(prior_mean, np.float32)
    self._log_ratio = float(np.log(self.sigma_max / self.sigma_min))

  def sigma(self, t):
    """σ(t) = σ_min (σ_max/σ_min)^(t/T), float32 [N]."""
    return self.sigma_min * tf.exp(tf.cast(t, tf.float32) / self.T * self._log_ratio)

  def sde(self, x, t):
    return tf.zeros_like(x), self.sigma(t) * np.sqrt(2.0 * self._log_ratio / self.T)

  def mean_coeff(self, t):
    return tf.ones_like(tf.cast(t, tf.float32))

  def std(self, t):
    return self.sigma(t)

  def sigma_of_t(self, t):
    return self.sigma(t)

  def t_of_sigma(self, sigma):
    return self.T * tf.math.log(tf.cast(sigma, tf.float32) / self.sigma_min) / self._log_ratio

  def discretize(self, x, t, dt):
    """SMLD: f = 0, G = sqrt(σ(t)² − σ(t − dt)²); over a grid the G² telescope to σ² − σ_start²."""
    t = tf.cast(t, tf.float32)
    return tf.zeros_like(x), tf.sqrt(self.sigma(t)**2 - self.sigma(t - dt)**2)


class LinearBetaSDE(SDE):
  """β(t) = β_min + (t/T)(β_max − β_min), the schedule VP and sub-VP share.

  B(t) = ∫_0^t β = β_min t + (β_max − β_min) t²/(2T); α(t) = exp(−B(t)/2).
  """

  def __init__(self, beta_min: float, beta_max: float, T: float):
    super().__init__(T)
    _check(0 < beta_min < beta_max,
           f'{type(self).__name__} needs 0 < beta_min < beta_max, got {beta_min} and {beta_max}')
    self.beta_min, self.beta_max = float(beta_min), float(beta_max)

  def beta(self, t):
    return self.beta_min + tf.cast(t, tf.float32) / self.T * (self.beta_max - self.beta_min)

  def integrated_beta(self, t):
    t = tf.cast(t, tf.float32)
    return self.beta_min * t + (self.beta_max - self.beta_min) * t**2 / (2.0 * self.T)

  def _t_of_integrated_beta(self, b):
    """Inverse of B: the positive root of the quadratic B(t) = b."""
    slope = (self.beta_max - self.beta_min) / self.T
    return (tf.sqrt(self.beta_min**2 + 2.0 * slope * b) - self.beta_min) / slope

  def mean_coeff(self, t):
    return tf.exp(-0.5 * self.integrated_beta(t))


class VPSDE(LinearBetaSDE):
  """Variance preserving (DDPM's continuum): dx = −½ β(t) x dt + sqrt(β(t)) dw.

  α(t) = exp(−B(t)/2), std(t) = sqrt(1 − α²), prior N(0, I). At t = T = 1
  with the defaults α = 0.0065, so the prior's offset from p_T is negligible.
  """

  def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
    super().__init__(beta_min, beta_max, T)

  def sde(self, x, t):
    beta = self.beta(t)
    return -0.5 * expand_to(beta, x) * x, tf.sqrt(beta)

  def std(self, t):
    return tf.sqrt(-tf.math.expm1(-self.integrated_beta(t)))

  def t_of_sigma(self, sigma):
    # σ² = std²/α² = e^B − 1.
    return self._t_of_integrated_beta(tf.math.log1p(tf.cast(sigma, tf.float32)**2))

  def discretize(self, x, t, dt):
    """DDPM: β_i = β(t) dt (score_sde's β(t)/N), f = (sqrt(1 − β_i) − 1) x, G = sqrt(β_i)."""
    beta_i = self.beta(t) * dt
    return expand_to(tf.sqrt(1.0 - beta_i) - 1.0, x) * x, tf.sqrt(beta_i)


class SubVPSDE(LinearBetaSDE):
  """Sub-VP: dx = −½ β(t) x dt + sqrt(β(t)(1 − e^{−2B(t)})) dw.

  Same α(t) as VP, std(t) = 1 − α² (below VP's at every t), prior N(0, I).
  score_sde gives it no special discretisation; `discretize` is the
  Euler-Maruyama step (f = drift dt, G = g sqrt(dt)).
  """

  def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
    super().__init__(beta_min, beta_max, T)

  def sde(self, x, t):
    beta = self.beta(t)
    discount = -tf.math.expm1(-2.0 * self.integrated_beta(t))
    return -0.5 * expand_to(beta, x) * x, tf.sqrt(beta * discount)

  def std(self, t):
    return -tf.math.expm1(-self.integrated_beta(t))

  def t_of_sigma(self, sigma):
    # σ = (1 − α²)/α = 1/α − α = 2 sinh(−log α), so B = −2 log α = 2 asinh(σ/2)
    # (exact for small σ, where log of α ≈ 1 − σ/2 would lose the digits).
    return self._t_of_integrated_beta(2.0 * tf.math.asinh(0.5 * tf.cast(sigma, tf.float32)))

  def discretize(self, x, t, dt):
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * tf.sqrt(tf.cast(dt, tf.float32))



# --- the registry: --sde names -> how each is built from the model config ----

#: name -> fn(ModelConfig) -> SDE. --sde=none (NCSN's discrete ladder) is not an SDE.
_SDES = {}


def register_sde(name: str, build) -> None:
  """Makes `--sde=name` build `build(model_config)` (a new name: ValueError otherwise)."""
  if name == 'none' or name in _SDES:
    raise ValueError(f'an SDE named {name!r} is already registered')
  _SDES[name] = build


def sde_names() -> tuple:
  """Every --sde value: 'none' (the discrete ladder) and the registered SDEs."""
  return ('none',) + tuple(_SDES)


register_sde('ve', lambda m: VESDE(sigma_min=m.sigma_end, sigma_max=m.sigma_begin,
                               prior_mean=m.prior_mean))
register_sde('vp', lambda m: VPSDE(beta_min=m.beta_min, beta_max=m.beta_max))
register_sde('subvp', lambda m: SubVPSDE(beta_min=m.beta_min, beta_max=m.beta_max))


@functools.lru_cache(maxsize=None)
def build_sde(model: config_lib.ModelConfig) -> SDE | None:
  """The model config's noise process; None for the discrete ladder (--sde=none).

  Cached on the (frozen, hashable) model config: the same SDE object for the
  same settings, so the samplers' traces are reused.
  """
  if model.sde == 'none':
    return None
  if model.sde not in _SDES:
    raise ValueError(f'unknown SDE {model.sde!r}; registered: {", ".join(sde_names())}')
  return _SDES[model.sde](model)


def check_sde_config(config: config_lib.Config) -> None:
  """--sde names a registered SDE (or none); ConfigError otherwise."""
  if config.model.sde not in sde_names():
    raise config_lib.ConfigError(f'--sde: must be one of {", ".join(sde_names())}, '
                                 f'got {config.model.sde!r}')
