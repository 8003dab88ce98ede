"""Score-matching objectives as pure functions of a score function.

A `score_fn(x, sigma_index)` maps perturbed data [N, ...] and noise-level
indices [N] to scores [N, ...] (the continuous-time DSM's `score_fn(x, sigma)`
takes the noise levels σ float32 [N] instead). Losses know no model and no optimizer
(score_sde's `get_smld_loss_fn` convention); randomness comes from a stateless
`seed` (int32 [2]) so a step is a pure function of its inputs.
"""

import functools

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.noise import nearest_level_index  # The per-level statistics' bucketing.


def dsm_target(perturbed_x, x, sigma):
  """The denoising score-matching target ∇ log q_σ(x̃ | x) = −(x̃ − x) / σ² (Vincent 2011).

  `sigma` broadcasts against x (scalar or [N, 1, ...]).
  """
  return -(perturbed_x - x) / sigma**2


def _per_example_sum(t):
  return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=-1)


def lognormal_level_logits(sigmas, log_mean: float, log_std: float):
  """Log-probabilities [L] of drawing each level when log σ ~ N(log_mean, log_std²).

  EDM's training distribution (Karras et al. 2022, "Elucidating the design space",
  P_mean / P_std) restricted to the ladder:
  p_i ∝ exp(−(log σ_i − log_mean)² / (2 log_std²)).
  On a geometric ladder the levels are equally spaced in log σ, so this is the
  discretised normal density. Unnormalised, as tf.random.stateless_categorical takes it.
  """
  log_sigmas = tf.math.log(tf.cast(sigmas, tf.float32))
  return -tf.square(log_sigmas - log_mean) / (2.0 * log_std**2)


def perturb_at_random_levels(x, sigmas, label_seed, noise_seed, level_logits=None):
  """x̃ = x + σ_i z with one level i per example (the annealed objectives).

  i ~ U{0..L−1} (the paper) unless `level_logits` [L] (unnormalised
  log-probabilities, e.g. `lognormal_level_logits`) weights the levels.

  Returns (perturbed_x like x, used_sigmas [N, 1, ...] broadcastable to x,
  sigma_index [N] int32).
  """
  batch = tf.shape(x)[0]
  if level_logits is None:
    sigma_index = tf.random.stateless_uniform([batch], label_seed, minval=0,
                                              maxval=tf.shape(sigmas)[0], dtype=tf.int32)
  else:
    draws = tf.random.stateless_categorical(
        tf.reshape(tf.cast(level_logits, tf.float32), [1, -1]), batch, label_seed,
        dtype=tf.int32)
    sigma_index = tf.reshape(draws, [batch])
  used_sigmas = tf.reshape(tf.gather(sigmas, sigma_index),
                           tf.concat([[batch], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
  perturbed_x = x + used_sigmas * tf.random.stateless_normal(tf.shape(x), noise_seed)
  return perturbed_x, used_sigmas, sigma_index


def anneal_dsm_per_example(score_fn, x, sigmas, seed, *, level_logits=None):
  """Annealed DSM, the paper's eqs. (5)-(6), one term per example.

  Each example gets a noise level i ~ U{0..L−1} and the loss
  λ(σ_i) · ½ ‖s_θ(x̃, i) − ∇ log q_σi(x̃|x)‖² with λ(σ) = σ², which makes every
  level's term of order one.

  Args:
    score_fn: (x̃ [N, ...], sigma_index int32 [N]) -> [N, ...].
    x: clean data float32 [N, ...].
    sigmas: float32 [L], the ladder, index 0 largest.
    seed: int32 [2] stateless seed.
    level_logits: optional [L] unnormalised log-probabilities of the levels in
      place of the uniform draw. Each level's term is unchanged, so the
      minimiser at every level is still its perturbed score; only how often
      each level is trained changes.

  Returns:
    (loss [N] float32, sigma_index [N] int32).
  """
  x = tf.cast(x, tf.float32)
  sigmas = tf.cast(sigmas, tf.float32)
  label_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  perturbed_x, used_sigmas, sigma_index = perturb_at_random_levels(x, sigmas, label_seed,
                                                                  noise_seed, level_logits)
  target_score = dsm_target(perturbed_x, x, used_sigmas)
  score = tf.cast(score_fn(perturbed_x, sigma_index), tf.float32)
  loss = 0.5 * _per_example_sum(tf.square(score - target_score)) * tf.reshape(used_sigmas, [-1])**2
  return loss, sigma_index


def per_sigma_mean(loss, sigma_index, num_scales):
  """Mean loss at each level: ([N], [N] int32) -> ([L] mean, [L] count).

  Levels with no example in the batch get mean 0 and count 0.
  """
  total = tf.math.unsorted_segment_sum(loss, sigma_index, num_scales)
  count = tf.math.unsorted_segment_sum(tf.ones_like(loss), sigma_index, num_scales)
  return tf.math.divide_no_nan(total, count), count


# --- single-σ and sliced objectives (the score-matching lab) ------------------
#
# Every function below has the per-example signature of `anneal_dsm_per_example`
# (options bound with functools.partial by `get_loss`). Single-σ objectives call
# score_fn with sigma_index zeros and return zeros; DSM uses sigmas[0] as its σ.
# Objectives on clean data (ESM, ISM, SSM, SSM-VR) never read `sigmas`.

PROJECTIONS = ('gaussian', 'rademacher')


def _zeros_index(x):
  return tf.zeros([tf.shape(x)[0]], tf.int32)


def _flat(t):
  return tf.reshape(t, [tf.shape(t)[0], -1])


def projection_vectors(shape, seed, projection: str = 'gaussian'):
  """Random slicing directions v with E[v vᵀ] = I: standard normal or Rademacher (±1)."""
  if projection == 'gaussian':
    return tf.random.stateless_normal(shape, seed)
  if projection == 'rademacher':
    bits = tf.random.stateless_uniform(shape, seed, minval=0, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, tf.float32)
  raise ValueError(f'unknown projection {projection!r}; choose from {PROJECTIONS}')


def esm_per_example(score_fn, x, sigmas, seed, *, exact_score_fn):
  """Explicit score matching: ½‖s(x) − ∇log p(x)‖², the Fisher divergence integrand.

  Needs the exact score (`exact_score_fn`: x [N, D] -> [N, D]), so it exists
  for the toy distributions only. Zero exactly at s = ∇log p.
  """
  del sigmas, seed
  x = tf.cast(x, tf.float32)
  diff = tf.cast(score_fn(x, _zeros_index(x)), tf.float32) - tf.cast(exact_score_fn(x), tf.float32)
  return 0.5 * _per_example_sum(tf.square(diff)), _zeros_index(x)


def jacobian_trace(fn, x):
  """(fn(x) [N, D], tr ∇_x fn(x) [N]) for x [N, D], exactly: one autodiff pass per dimension.

  Examples must not interact inside `fn` (no batch statistics), which holds for
  every score network here. Cost is D backward passes: meant for toy data.
  """
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    out = tf.cast(fn(x), tf.float32)
    columns = tf.unstack(out, num=x.shape[-1], axis=-1)
  trace = tf.add_n([tape.gradient(c, x)[:, d] for d, c in enumerate(columns)])
  del tape
  return out, trace


def ism_per_example(score_fn, x, sigmas, seed):
  """Implicit score matching (Hyvärinen 2005): tr(∇_x s(x)) + ½‖s(x)‖².

  Equals ESM minus the constant ½E‖∇log p‖² (integration by parts), so at the
  truth its expectation is −½E‖∇log p‖². Exact trace; x must be [N, D].
  """
  del sigmas, seed
  x = tf.cast(x, tf.float32)
  index = _zeros_index(x)
  score, trace = jacobian_trace(lambda xx: score_fn(xx, index), x)
  return trace + 0.5 * tf.reduce_sum(tf.square(score), axis=-1), index


def _sliced_terms(score_fn, x, sigma_index, seed, num_projections, projection):
  """Per-example means over M projections of vᵀ∇_x(vᵀs), ½(vᵀs)², and ½‖s‖².

  x is repeated M times so one backward pass gives every vᵀ∇(vᵀs) (as in the
  reference code's `dup_samples`). Returns three [N] tensors.
  """
  batch = tf.shape(x)[0]
  dup_x = tf.tile(x, tf.concat([[num_projections], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
  dup_index = tf.tile(sigma_index, [num_projections])
  vectors = projection_vectors(tf.shape(dup_x), seed, projection)
  with tf.GradientTape() as tape:
    tape.watch(dup_x)
    score = tf.cast(score_fn(dup_x, dup_index), tf.float32)
    score_v = _per_example_sum(score * vectors)                     # vᵀs [M N]
  grad_score_v = tape.gradient(score_v, dup_x)                      # ∇_x(vᵀs)
  curvature = _per_example_sum(vectors * grad_score_v)              # vᵀ∇(vᵀs)

  def mean_over_projections(t):
    return tf.reduce_mean(tf.reshape(t, [num_projections, batch]), axis=0)

  return (mean_over_projections(curvature), mean_over_projections(0.5 * score_v**2),
          mean_over_projections(0.5 * _per_example_sum(tf.square(score))))


def ssm_per_example(score_fn, x, sigmas, seed, *, num_projections: int = 1,
                    projection: str = 'gaussian', variance_reduction: bool = False):
  """Sliced score matching (Song, Garg, Shi & Ermon 2019), eq. (7) of the paper.

  E_v[vᵀ∇_x(vᵀ s(x)) + ½(vᵀ s(x))²], averaged over `num_projections` vectors
  per example with E[vvᵀ] = I (Gaussian or Rademacher), so its expectation
  equals ISM. With `variance_reduction` (SSM-VR, the paper's eq. (8)) the
  second term is replaced by its expectation over v, ½‖s(x)‖².
  """
  del sigmas
  x = tf.cast(x, tf.float32)
  index = _zeros_index(x)
  curvature, half_sq_proj, half_sq_norm = _sliced_terms(score_fn, x, index, seed,
                                                        num_projections, projection)
  return curvature + (half_sq_norm if variance_reduction else half_sq_proj), index


def ssm_vr_per_example(score_fn, x, sigmas, seed, *, num_projections: int = 1,
                       projection: str = 'gaussian'):
  """SSM-VR: vᵀ∇_x(vᵀ s) + ½‖s‖² (see `ssm_per_example`)."""
  return ssm_per_example(score_fn, x, sigmas, seed, num_projections=num_projections,
                         projection=projection, variance_reduction=True)


def dsm_per_example(score_fn, x, sigmas, seed):
  """Denoising score matching at one σ = sigmas[0] (Vincent 2011).

  ½‖s(x̃) − ∇log q_σ(x̃|x)‖² with x̃ = x + σz. Its minimiser over functions is
  E[∇log q_σ(x̃|x) | x̃] = ∇log p_σ(x̃), the perturbed score. Unweighted
  (a single level needs no λ(σ)).
  """
  x = tf.cast(x, tf.float32)
  sigma = tf.cast(sigmas, tf.float32)[0]
  index = _zeros_index(x)
  perturbed_x = x + sigma * tf.random.stateless_normal(tf.shape(x), seed)
  score = tf.cast(score_fn(perturbed_x, index), tf.float32)
  return 0.5 * _per_example_sum(tf.square(score - dsm_target(perturbed_x, x, sigma))), index


def anneal_ssm_per_example(score_fn, x, sigmas, seed, *, num_projections: int = 1,
                           projection: str = 'gaussian', variance_reduction: bool = True,
                           level_logits=None):
  """Annealed sliced score matching: σ_i² · SSM(-VR) of s(·, i) on x̃ = x + σ_i z.

  Levels are drawn per example as in annealed DSM (uniform, or by `level_logits`). This is the
  form of the reference `anneal_sliced_score_estimation_vr` (ermongroup/ncsn
  losses/sliced_sm.py): the VR form by default, weighted by σ_i², with no target
  term added or subtracted, so the value at the truth is σ_i²·(−½E‖∇log p_σi‖²)
  rather than 0; its minimiser at each level is the perturbed score ∇log p_σi.
  """
  x = tf.cast(x, tf.float32)
  sigmas = tf.cast(sigmas, tf.float32)
  label_seed, noise_seed, vector_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  perturbed_x, used_sigmas, sigma_index = perturb_at_random_levels(x, sigmas, label_seed,
                                                                  noise_seed, level_logits)
  curvature, half_sq_proj, half_sq_norm = _sliced_terms(score_fn, perturbed_x, sigma_index,
                                                        vector_seed, num_projections, projection)
  loss = curvature + (half_sq_norm if variance_reduction else half_sq_proj)
  return loss * tf.reshape(used_sigmas, [-1])**2, sigma_index


# --- continuous-time DSM (the SDE view, Song et al. 2021) ---------------------
#
# The score network here is a σ-network score_fn(x̃, sigma float32 [N]) (see
# ncsn_tf/models/score_model.py), not an index network: the noise level is
# drawn from a continuum, so no level index exists to pass.

#: `weighting` values of `continuous_dsm_per_example`.
CONTINUOUS_WEIGHTINGS = ('sigma2', 'likelihood', 'edm')


def _is_variance_exploding(sde) -> bool:
  return isinstance(sde, noise.VESDE)


def truncated_lognormal_sigma(u, log_mean: float, log_std: float, sigma_min: float,
                              sigma_max: float):
  """σ float32 [N] with log σ ~ N(log_mean, log_std²) restricted to [σ_min, σ_max].

  EDM's training distribution of σ (Karras et al. 2022, P_mean / P_std) kept
  inside the range the samplers use, by the inverse CDF of the truncated
  normal: with a = Φ((log σ_min − m)/s) and b = Φ((log σ_max − m)/s),
  log σ = m + s Φ⁻¹(a + (b − a) u). Truncating rather than clipping keeps
  the density's shape inside the range instead of piling mass on its ends.
  Computed in float64: a or b near 1 (a mean far from the range) would lose
  the tail's digits in float32.

  Args:
    u: float [N] in [0, 1), uniform draws.
    log_mean, log_std: m and s > 0 of log σ (Python floats).
    sigma_min, sigma_max: the range, 0 < σ_min < σ_max (floats or scalar tensors).
  """
  if not log_std > 0:
    raise ValueError(f'log_std must be > 0, got {log_std}')
  log_lo = tf.math.log(tf.cast(sigma_min, tf.float64))
  log_hi = tf.math.log(tf.cast(sigma_max, tf.float64))

  def normal_cdf(v):
    return 0.5 * tf.math.erfc(-(v - log_mean) / (log_std * np.sqrt(2.0)))

  a, b = normal_cdf(log_lo), normal_cdf(log_hi)
  p = a + (b - a) * tf.cast(u, tf.float64)
  log_sigma = log_mean + log_std * tf.math.ndtri(p)
  return tf.cast(tf.exp(tf.clip_by_value(log_sigma, log_lo, log_hi)), tf.float32)


def continuous_noise_levels(x, sigmas, seed, *, sde=None, eps: float = 1e-5,
                            weighting: str = 'sigma2', log_sigma_normal=None,
                            sigma_data: float = 0.0):
  """The draws of `continuous_dsm_per_example`: (t [N], sigma [N], z like x, weight [N]).

  One time t per example from the stateless `seed`, split in two (times, noise)
  as the annealed losses split theirs:
    * VE SDE (`sde` a noise.VESDE, or None for the VE SDE spanned by the ladder,
      σ_min = sigmas[−1], σ_max = sigmas[0], T = 1): t ~ U(0, T), so
      σ = σ_min (σ_max/σ_min)^(t/T) is log-uniform in [σ_min, σ_max];
      with `log_sigma_normal` = (m, s) instead log σ ~ N(m, s²) truncated to
      [σ_min, σ_max] (EDM's log-normal, `truncated_lognormal_sigma`), t = t(σ);
    * VP / sub-VP: t ~ U(eps, T), σ = sde.sigma_of_t(t) = std(t)/α(t).
  z ~ N(0, I) with x's shape. `weight` is λ/σ² in the σ coordinates: 1 for
  'sigma2', g(t)²/std(t)² for 'likelihood', (σ² + σ_d²)/σ_d² for 'edm'
  (see `continuous_dsm_per_example`).
  Exposed so tests (and diagnostics) can see exactly what the loss drew.
  """
  if weighting not in CONTINUOUS_WEIGHTINGS:
    raise ValueError(f'unknown weighting {weighting!r}; choose from {CONTINUOUS_WEIGHTINGS}')
  if weighting == 'edm' and not sigma_data > 0:
    raise ValueError(f"weighting 'edm' needs sigma_data > 0, got {sigma_data}")
  if log_sigma_normal is not None and sde is not None and not _is_variance_exploding(sde):
    raise ValueError('log_sigma_normal (EDM\'s log-normal σ) applies to the VE SDE, got '
                     f'{type(sde).__name__}')
  x = tf.cast(x, tf.float32)
  sigmas = tf.cast(sigmas, tf.float32)
  time_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  batch = tf.shape(x)[0]
  u = tf.random.stateless_uniform([batch], time_seed)                    # U[0, 1)
  z = tf.random.stateless_normal(tf.shape(x), noise_seed)
  if sde is None:
    # The ladder's VE SDE, in the graph (sigmas may be a tensor); T = 1.
    log_ratio = tf.math.log(sigmas[0] / sigmas[-1])
    if log_sigma_normal is None:
      t = u
      sigma = sigmas[-1] * tf.exp(t * log_ratio)
    else:
      sigma = truncated_lognormal_sigma(u, *log_sigma_normal, sigmas[-1], sigmas[0])
      t = tf.math.log(sigma / sigmas[-1]) / log_ratio
    likelihood_factor = lambda: 2.0 * log_ratio * tf.ones_like(sigma)   # g²/σ², constant for VE
  else:
    if _is_variance_exploding(sde):
      lower = 0.0
    else:
      lower = float(eps)
      if not 0.0 < lower < sde.T:
        raise ValueError(f'continuous DSM needs 0 < eps < T = {sde.T:g}, got eps={eps}')
    if log_sigma_normal is None:
      t = lower + (sde.T - lower) * u
      sigma = sde.sigma_of_t(t)
    else:
      sigma = truncated_lognormal_sigma(u, *log_sigma_normal, sde.sigma_min, sde.sigma_max)
      t = sde.t_of_sigma(sigma)

    def likelihood_factor():
      _, diffusion = sde.sde(x, t)
      _, std = sde.marginal(x, t)
      return tf.square(diffusion / std)

  if weighting == 'likelihood':
    weight = likelihood_factor()
  elif weighting == 'edm':
    weight = (tf.square(sigma) + sigma_data**2) / sigma_data**2
  else:
    weight = tf.ones_like(sigma)
  return t, sigma, z, weight


def continuous_dsm_per_example(score_fn, x, sigmas, seed, *, sde=None, eps: float = 1e-5,
                               weighting: str = 'sigma2', labels=None, label_dropout: float = 0.0,
                               num_classes: int = 0, log_sigma_normal=None,
                               sigma_data: float = 0.0):
  """Continuous-time DSM (Song et al. 2021, eq. 7), one term per example.

  Per example a noise level is drawn (`continuous_noise_levels`: log-uniform σ
  for VE, t ~ U(eps, T) and σ = σ(t) for VP/sub-VP), x̃ = x + σ z, and

      loss = ½ λ ‖s(x̃, σ) − (−z/σ)‖²,   −z/σ = ∇ log q_σ(x̃ | x) (`dsm_target`).

  x̃ is the VE-equivalent coordinate the σ-network sees: for VP/sub-VP the
  kernel's x_t = α x + std z is x_t/α = x + σ z with σ = std/α, and
  score_t(x_t) = s(x_t/α, σ)/α (`ScoreModel.score_t`).

  Weightings (λ in these σ coordinates):
    * 'sigma2': λ = σ², every level's term of order one (the paper's λ(σ),
      and score_sde's default λ_t = std² for VP: with s_t = s/α and
      σ = std/α, ½ std² ‖s_t + z/std‖² = ½ (std/α)² ‖s + α z/std‖²
      = ½ σ² ‖s + z/σ‖², the same number exactly);
    * 'likelihood': score_sde's λ_t = g(t)², which makes the objective a
      bound on the negative log-likelihood (Song et al. 2021b). In σ
      coordinates ½ g² ‖s_t + z/std‖² = ½ (g²/α²) ‖s + z/σ‖²
      = (g²/std²) · ½ σ² ‖s + z/σ‖²: the 'sigma2' term times g(t)²/std(t)².
      For VE (α = 1, std = σ, g² = σ² · 2 log(σ_max/σ_min)/T) the factor is
      the constant 2 log(σ_max/σ_min)/T, so there it only rescales 'sigma2'.
      For VP it grows like 1/t as t → 0: large-variance terms near eps.
    * 'edm': EDM's λ(σ) = (σ² + σ_d²)/(σ σ_d)² on ‖D − x‖² (Karras et al.
      2022, eq. 8 and table 1), with the denoiser D = x̃ + σ² s. Since
      ‖D − x‖² = σ² ‖σ s + z‖², that is the 'sigma2' term times
      (σ² + σ_d²)/σ_d². With --preconditioning=edm (D = c_skip x̃ + c_out F)
      it gives the network's output F unit weight at every σ
      (λ c_out² = 1); a σ-scaled score network (s = F/σ) has that already
      under 'sigma2'.

  Args:
    score_fn: the σ-network, (x̃ float32 [N, ...], sigma float32 [N] > 0) -> [N, ...].
    x: clean data float32 [N, ...].
    sigmas: float32 [L], the ladder, index 0 largest: only for the returned
      level index (and for the VE range when `sde` is None).
    seed: int32 [2] stateless seed.
    sde: a noise.VESDE / VPSDE / SubVPSDE, or None for the ladder's VE SDE.
    eps: the smallest time for VP/sub-VP, in (0, T); unused for VE, whose
      σ(0) = σ_min > 0 already keeps the score finite.
    weighting: 'sigma2' or 'likelihood'.
    labels: None, or int32 [N] in [0, num_classes): a class-conditional
      network is trained as score_fn(x̃, σ, labels) (classifier-free
      guidance, Ho & Salimans 2022), each label replaced by "no label" =
      num_classes with probability `label_dropout` (`drop_labels`), so one
      network learns both s(x, σ, y) and s(x, σ).
    label_dropout: in [0, 1); with `labels` only.
    num_classes: C, the "no label" index; with `labels` only.
    log_sigma_normal: None (σ log-uniform, the paper), or (m, s): EDM's
      log σ ~ N(m, s²) over the VE range (`continuous_noise_levels`).
    sigma_data: σ_d > 0, for weighting 'edm'.

  Returns:
    (loss [N] float32, level_index [N] int32): the nearest level of `sigmas`
    to each drawn σ in log σ (the ends for σ outside the ladder), so per-level
    loss statistics (`per_sigma_mean`) read as for the annealed losses.
  """
  x = tf.cast(x, tf.float32)
  _, sigma, z, weight = continuous_noise_levels(x, sigmas, seed, sde=sde, eps=eps,
                                                weighting=weighting,
                                                log_sigma_normal=log_sigma_normal,
                                                sigma_data=sigma_data)
  used_sigmas = tf.reshape(sigma, tf.concat([[tf.shape(x)[0]], tf.ones([tf.rank(x) - 1], tf.int32)],
                                            0))                          # [N, 1, ...]
  perturbed_x = x + used_sigmas * z
  if labels is None:
    score = tf.cast(score_fn(perturbed_x, sigma), tf.float32)
  else:
    kept = drop_labels(labels, seed, label_dropout, num_classes)
    score = tf.cast(score_fn(perturbed_x, sigma, kept), tf.float32)
  # σ s + z is σ(s − target) without forming z/σ: at σ_min = 1e-5·scale the
  # target is huge and the difference of two large numbers loses digits.
  loss = 0.5 * weight * _per_example_sum(tf.square(used_sigmas * score + z))
  level_index, _ = nearest_level_index(sigma, sigmas)
  return loss, level_index


def drop_labels(labels, seed, label_dropout: float, num_classes: int):
  """labels int32 [N] with each replaced by ∅ = num_classes with probability label_dropout.

  The draw comes from `seed` folded with a constant, so the loss's other
  draws (times and noise, `continuous_noise_levels`) are those of the same
  seed without labels.
  """
  labels = tf.cast(labels, tf.int32)
  u = tf.random.stateless_uniform(tf.shape(labels), tf.random.experimental.stateless_fold_in(
      tf.cast(seed, tf.int32), _LABEL_DROPOUT_STREAM))
  return tf.where(u < label_dropout, tf.fill(tf.shape(labels), num_classes), labels)


#: fold_in constant of the label-dropout draws (any value distinct from the splits).
_LABEL_DROPOUT_STREAM = 7717


def classifier_per_example(logits_fn, x, labels, sigmas, seed, *, sde=None, eps: float = 1e-5):
  """Cross-entropy of a noise-conditional classifier on perturbed data, one term per example.

  The noise is drawn as continuous DSM draws it (`continuous_noise_levels`:
  log-uniform σ in [σ_min, σ_max] for VE or the ladder, t ~ U(eps, T) and
  σ = σ(t) = std(t)/α(t) for VP/sub-VP), x̃ = x + σ z, and

      loss = −log p_θ(y | x̃, σ) = −log softmax(logits_fn(x̃, σ))[y].

  The classifier always sees the VE-equivalent x̃ = x_t/α and σ(t), the
  convention of ScoreModel.score_t, so guidance at time t asks it at
  (x_t/α(t), σ(t)) for every SDE (ncsn_tf/sampling/guidance.py).

  Args:
    logits_fn: (x̃ float32 [N, ...], sigma float32 [N] > 0) -> logits [N, C].
    x: clean data float32 [N, ...].
    labels: int32 [N] in [0, C).
    sigmas: float32 [L], the ladder (index 0 largest): the level buckets, and
      the VE range when `sde` is None.
    seed: int32 [2] stateless seed.
    sde, eps: as `continuous_dsm_per_example`.

  Returns:
    (loss [N] float32, level_index [N] int32 (the nearest ladder level of each
    σ, for per-level statistics), correct [N] float32: 1 where the arg-max
    class is the label).
  """
  x = tf.cast(x, tf.float32)
  labels = tf.cast(labels, tf.int32)
  _, sigma, z, _ = continuous_noise_levels(x, sigmas, seed, sde=sde, eps=eps)
  perturbed_x = x + noise.expand_to(sigma, x) * z
  logits = tf.cast(logits_fn(perturbed_x, sigma), tf.float32)
  loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
  level_index, _ = nearest_level_index(sigma, sigmas)
  return loss, level_index, correct


#: Per-example losses selectable with --loss: name -> fn(score_fn, x, sigmas,
#: seed) -> (loss [N], sigma_index [N] int32).
LOSSES = {
    'esm': esm_per_example,
    'ism': ism_per_example,
    'dsm': dsm_per_example,
    'ssm': ssm_per_example,
    'ssm_vr': ssm_vr_per_example,
    'anneal_dsm': anneal_dsm_per_example,
    'anneal_ssm': anneal_ssm_per_example,
    'continuous_dsm': continuous_dsm_per_example,
}

#: Objectives that train one unconditional score s(x) (no noise ladder).
SINGLE_SIGMA_LOSSES = ('esm', 'ism', 'dsm', 'ssm', 'ssm_vr')
#: Keyword options each loss accepts; `get_loss` passes on only these.
_LOSS_OPTIONS = {
    'esm': ('exact_score_fn',),
    'ssm': ('num_projections', 'projection'),
    'ssm_vr': ('num_projections', 'projection'),
    'anneal_dsm': ('level_logits',),
    'anneal_ssm': ('num_projections', 'projection', 'level_logits'),
    'continuous_dsm': ('sde', 'eps', 'weighting', 'label_dropout', 'num_classes',
                       'log_sigma_normal', 'sigma_data'),
}


def get_loss(name: str, **options):
  """The per-example loss registered under `name` (see LOSSES), options bound.

  options: exact_score_fn (required by 'esm'), num_projections and projection
  (the sliced losses), level_logits (the annealed losses), sde, eps,
  weighting, label_dropout, num_classes, log_sigma_normal and sigma_data
  ('continuous_dsm', whose score_fn
  takes σ float32 [N] in place of the level index; sde None is the ladder's
  VE SDE; the labels themselves come with each call); options a loss does
  not use are ignored, so a caller can pass the whole set. A None option keeps the loss's default.
  """
  try:
    fn = LOSSES[name]
  except KeyError:
    raise ValueError(f'unknown loss {name!r}; choose from {sorted(LOSSES)}') from None
  bound = {k: v for k, v in options.items() if k in _LOSS_OPTIONS.get(name, ()) and v is not None}
  if name == 'esm' and 'exact_score_fn' not in bound:
    raise ValueError("loss 'esm' needs the exact score (exact_score_fn): toy datasets only")
  if 'projection' in bound and bound['projection'] not in PROJECTIONS:
    raise ValueError(f'unknown projection {bound["projection"]!r}; choose from {PROJECTIONS}')
  if 'weighting' in bound and bound['weighting'] not in CONTINUOUS_WEIGHTINGS:
    raise ValueError(f'unknown weighting {bound["weighting"]!r}; '
                     f'choose from {CONTINUOUS_WEIGHTINGS}')
  if 'eps' in bound and not 0.0 < bound['eps'] < 1.0:
    raise ValueError(f'eps must be in (0, 1), got {bound["eps"]}')
  return functools.partial(fn, **bound) if bound else fn
