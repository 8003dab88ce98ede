"""Exact likelihoods of score models through the probability-flow ODE, and bits/dim.

The probability-flow ODE of an SDE (Song et al. 2021, section 4.3 and
appendix D.2),

    dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² s(x, t),      s = ∇_x log p_t,

carries p_eps to p_T deterministically, so it is a continuous normalising
flow, and the instantaneous change of variables (Chen et al. 2018) gives

    d log p_t(x(t)) / dt = −div f̃(x(t), t),
    log p_eps(x) = log p_T(x(T)) + ∫_eps^T div f̃(x(t), t) dt,

with x(eps) = x. A score model defines its density by putting the SDE's prior
π in place of p_T at the end: log p_model(x) = log π(x_T) + ∫ div f̃ dt. With
the exact score this is p_eps itself up to log π(x_T) − log p_T(x_T), the
prior mismatch (zero only when π = p_T; see noise.VESDE on prior_mean).

`log_likelihood` integrates x and the running integral jointly with TFP's
DormandPrince, forward in plain t from eps to T (the direction TFP supports;
ode.py's reversed variable is only needed for T -> eps). The divergence is
either exact (autodiff of the Jacobian's trace: D reverse passes, for the
toys) or the Hutchinson-Skilling estimate ε^T (∂f̃/∂x) ε with probes ε drawn
once and held fixed over the whole solve, which keeps the ODE right-hand
side a smooth function of t (an adaptive solver needs that) and makes the
estimate of the whole integral unbiased: E[ε^T (∫J dt) ε] = tr ∫J dt.

`bits_per_dim` converts a log-density in the model's space into bits per
dimension in 8-bit pixel units (the change of variables is written out in its
docstring); `gaussian_baseline_bpd` is the closed-form full-covariance
Gaussian baseline in the same units, and UNIFORM_BPD = 8 the uniform one.

No absl, no Config: primitive arguments only. Shapes: x float32 [N, ...];
per-example log-densities float32 [N]; all log-densities in nats.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from ncsn_tf.sampling.samplers.ode import MAX_SOLVER_STEPS

#: Bits/dim of the uniform density on [0, 1)^D in 8-bit pixel units: log2(256).
UNIFORM_BPD = 8.0

#: The exact trace costs one reverse pass per dimension at every solver
#: evaluation (the 2-D toys: 2); above this many dimensions use Hutchinson.
MAX_EXACT_TRACE_DIMS = 64

#: Probe kinds of the Hutchinson-Skilling estimator.
PROBES = ('rademacher', 'gaussian')

#: What `log_likelihood_parts` returns.
#:   log_prob: float32 [N], prior_log_prob + delta_log_prob (nats).
#:   prior_log_prob: float32 [N], log π(x_T) under the SDE's prior.
#:   delta_log_prob: float32 [N], ∫_eps^T div f̃ dt = log p_eps(x) − log p_T(x_T)
#:     along the ODE path (exact, or the mean of the K Hutchinson probes' integrals).
#:   log_prob_stderr: float32 [N], the Hutchinson estimate's standard error per example,
#:     std_k/sqrt(K) of the K probes' integrals (ddof 1); 0 for the exact trace, NaN for
#:     one probe (no spread to measure). The solver's own error is not in it.
#:   latent: float32 [N, ...], x_T, the ODE's image of x at t = T.
#:   nfe: int32 scalar, the solver's right-hand-side evaluations.
LikelihoodParts = collections.namedtuple(
    'LikelihoodParts', ['log_prob', 'prior_log_prob', 'delta_log_prob', 'latent', 'nfe',
                        'log_prob_stderr'])


def _check(condition, message):
  if not condition:
    raise ValueError(message)


def _check_settings(sde, *, exact_trace, hutchinson_probes, probe, rtol, atol, eps, seed):
  """One-line ValueError on a bad setting; returns eps as a float."""
  _check(isinstance(rtol, (int, float)) and rtol > 0, f'likelihood rtol must be > 0, got {rtol}')
  _check(isinstance(atol, (int, float)) and atol > 0, f'likelihood atol must be > 0, got {atol}')
  _check(isinstance(eps, (int, float)) and 0 < eps < sde.T,
         f'likelihood eps must be in (0, T={sde.T:g}), got {eps}')
  if not exact_trace:
    integer = (isinstance(hutchinson_probes, (int, np.integer))
               and not isinstance(hutchinson_probes, bool))
    _check(integer and hutchinson_probes >= 1,
           f'hutchinson_probes must be an integer >= 1, got {hutchinson_probes!r}')
    _check(probe in PROBES, f'unknown Hutchinson probe {probe!r}; choose from {PROBES}')
    _check(seed is not None,
           'the Hutchinson estimator needs a seed (int32 [2]); pass one or exact_trace=True')
  return float(eps)


def draw_probes(shape, num_probes: int, probe: str, seed):
  """Hutchinson probes float32 [num_probes, N, ...] with E[ε ε^T] = I.

  Args:
    shape: the data batch's shape [N, ...].
    num_probes: K >= 1.
    probe: 'rademacher' (entries ±1, the lower-variance choice: for a diagonal
      Jacobian it is exact) or 'gaussian' (entries N(0, 1)).
    seed: stateless seed, int32 [2]; the same seed gives the same probes.
  """
  _check(probe in PROBES, f'unknown Hutchinson probe {probe!r}; choose from {PROBES}')
  full = tf.concat([[num_probes], tf.cast(shape, tf.int32)], 0)
  seed = tf.cast(seed, tf.int32)
  if probe == 'gaussian':
    return tf.random.stateless_normal(full, seed)
  bits = tf.random.stateless_uniform(full, seed, minval=0, maxval=2, dtype=tf.int32)
  return tf.cast(2 * bits - 1, tf.float32)


def _exact_divergence(tape, flat_dx, x, dims):
  """tr(∂dx/∂x) per example [N]: Σ_i (e_i^T J)_i, one reverse pass (VJP) per dimension.

  `flat_dx` [N, D] must have been computed (flattened too) under `tape`,
  which differentiates only what it recorded. Seeding output i of every
  example at once gives each example's own row i only because example n's
  output depends on example n's input alone, true of every score model here
  (no batch statistics). The loop is unrolled (D <= MAX_EXACT_TRACE_DIMS):
  cheaper to trace than batch_jacobian's vectorisation, and any op with a
  gradient works.
  """
  batch = tf.shape(x)[0]
  diagonal = []
  for i in range(dims):
    row = tape.gradient(flat_dx, x, output_gradients=tf.one_hot(tf.fill([batch], i), dims))
    diagonal.append(tf.reshape(row, [batch, dims])[:, i])
  return tf.add_n(diagonal)[:, None]


def _hutchinson_divergence(tape, dx, x, probes, num_probes):
  """ε_k^T (∂dx/∂x) ε_k per example and probe [N, K]; one reverse pass (VJP) per probe.

  Each probe's estimate is integrated on its own (the solve's state holds K
  integrals), so their spread gives each example's standard error.
  """
  axes = tf.range(1, tf.rank(x))
  estimates = []
  for k in range(num_probes):  # K is small and a Python int: an unrolled loop.
    vjp = tape.gradient(dx, x, output_gradients=probes[k])           # ε_k^T J, [N, ...]
    estimates.append(tf.reduce_sum(vjp * probes[k], axis=axes))
  return tf.stack(estimates, axis=1)


@tf.function(reduce_retracing=True)
def _solve_joint(score_fn, sde, x, probes, num_probes, dims, eps, rtol, atol):
  """(x_T, ∫ div f̃ dt [N, K], nfe) from eps to T; probes None means the exact trace (K = 1).

  One trace per (score_fn, sde, trace kind, num_probes, dims, eps,
  tolerances). The loop counts K and D come in as Python ints: under
  reduce_retracing the tensors' static shapes may be generalised to None.
  """
  batch = tf.shape(x)[0]
  t_end = sde.T

  def rhs(t, state):
    y, _ = state
    # DormandPrince's last step may overshoot T and interpolate back; hold the
    # time inside [eps, T], where the SDE's coefficients and the score are meant.
    t = tf.fill([batch], tf.clip_by_value(t, eps, t_end))
    # The drift is evaluated once under a tape; its reverse passes give the
    # divergence, so an evaluation is one score call plus D (exact) or K
    # (Hutchinson) vector-Jacobian products.
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(y)
      dx = sde.reverse_drift(y, t, score_fn(y, t), probability_flow=True)
      flat_dx = tf.reshape(dx, [batch, dims]) if probes is None else None
    if probes is None:
      divergence = _exact_divergence(tape, flat_dx, y, dims)
    else:
      divergence = _hutchinson_divergence(tape, dx, y, probes, num_probes)
    del tape
    return dx, divergence

  solver = tfp.math.ode.DormandPrince(rtol=rtol, atol=atol, max_num_steps=MAX_SOLVER_STEPS)
  # The error norm spans x and the running integral: the log-density gets
  # the same tolerance as the path (it is what we want accurate).
  initial = (x, tf.zeros([batch, max(num_probes, 1)], tf.float32))
  results = solver.solve(rhs, initial_time=eps, initial_state=initial, solution_times=[t_end])
  x_end, delta = (s[-1] for s in results.states)
  # + 1: the evaluation at the solution time that TFP does not count (samplers/ode.py
  # UNCOUNTED_EVALUATIONS explains it).
  return x_end, delta, tf.cast(results.diagnostics.num_ode_fn_evaluations, tf.int32) + 1


def log_likelihood_parts(score_fn, sde, x, seed=None, *, exact_trace=False, hutchinson_probes=1,
                         probe='rademacher', rtol=1e-5, atol=1e-5, eps=1e-5) -> LikelihoodParts:
  """The model log-density at x with its parts: see `log_likelihood` for the arguments.

  Returns LikelihoodParts (log_prob, prior_log_prob, delta_log_prob, latent,
  nfe, log_prob_stderr). The latent x_T and the split let a caller replace the prior by a
  known p_T (tests do, to separate solver error from prior mismatch) or
  use x_T for outlier detection.
  """
  eps = _check_settings(sde, exact_trace=exact_trace, hutchinson_probes=hutchinson_probes,
                        probe=probe, rtol=rtol, atol=atol, eps=eps, seed=seed)
  # A non-finite x never lets the adaptive solver converge: refuse it (InvalidArgument).
  x = tf.debugging.check_numerics(tf.convert_to_tensor(x, tf.float32),
                                  'likelihood x must be finite')
  _check(x.shape.rank is not None and x.shape.rank >= 2 and x.shape[1:].is_fully_defined(),
         f'likelihood x must be [N, ...] with known data axes, got shape {x.shape}')
  dims = int(np.prod(x.shape[1:]))
  _check(not exact_trace or dims <= MAX_EXACT_TRACE_DIMS,
         f'exact_trace costs one reverse pass per dimension per evaluation; {dims} dimensions '
         f'is over {MAX_EXACT_TRACE_DIMS}: use the Hutchinson estimator (exact_trace=False)')
  num_probes = 0 if exact_trace else int(hutchinson_probes)
  probes = None if exact_trace else draw_probes(tf.shape(x), num_probes, probe, seed)
  latent, deltas, nfe = _solve_joint(score_fn, sde, x, probes, num_probes, dims, eps, float(rtol),
                                     float(atol))
  delta = tf.reduce_mean(deltas, axis=1)
  if num_probes >= 2:  # s/√K with s the ddof-1 std: the population std over √(K − 1).
    stderr = tf.math.reduce_std(deltas, axis=1) * np.sqrt(1.0 / (num_probes - 1))
  else:  # The exact trace has no estimation error; one probe has no spread to measure.
    stderr = tf.fill(tf.shape(delta), 0.0 if exact_trace else np.nan)
  prior = sde.prior_log_prob(latent)
  return LikelihoodParts(prior + delta, prior, delta, latent, nfe, stderr)


def log_likelihood(score_fn, sde, x, seed=None, *, exact_trace=False, hutchinson_probes=1,
                   probe='rademacher', rtol=1e-5, atol=1e-5, eps=1e-5):
  """log p_model(x) in nats by the probability-flow ODE, x read as a draw of p_eps.

  log p_model(x) = log π(x_T) + ∫_eps^T div f̃(x(t), t) dt, integrated from
  x(eps) = x to T jointly with the path by DormandPrince, inside tf.function
  (eagerly every step is a host round trip, unusably slow).

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> ∇ log p_t(x) [N, ...]; must be
      differentiable in x (TensorFlow ops) and per-example.
    sde: a noise.SDE (VESDE, VPSDE, SubVPSDE): drift, diffusion, T, prior.
    x: float32 [N, ...] in the model's data space. The density is that of
      p_eps: for VE (noise.VESDE's convention) the data plus N(0, σ(eps)²)
      noise, σ(eps) ≈ σ_min; on images in [0, 1] σ_min = 0.01 is 2.6 bins of
      1/256, so the model scores data blurred beyond the dequantisation, as
      in score_sde. VP's std(eps = 1e-5) is about 1e-3, under a bin.
    seed: stateless seed int32 [2] for the Hutchinson probes (drawn once,
      fixed over the solve; one independent draw per example); unused, may be
      None, with exact_trace.
    exact_trace: the exact divergence by autodiff of the Jacobian's trace: D
      reverse passes per evaluation, for low dimension (the 2-D toys; at
      most MAX_EXACT_TRACE_DIMS).
      Otherwise the Hutchinson-Skilling estimate: unbiased for log p_model(x),
      hence for bits/dim (affine in it), not for p_model(x) = exp(...).
    hutchinson_probes: K >= 1 probes, their estimates averaged (variance / K); with
      K >= 2 `log_likelihood_parts` also gives each example's standard error.
    probe: 'rademacher' or 'gaussian'.
    rtol, atol: DormandPrince's tolerances, > 0 (the SDE paper's 1e-5). The
      error norm is over the whole batch (x and the log-density together), so
      every example shares the step sizes and the NFE.
    eps: the start time in (0, T) (score_sde's likelihood default 1e-5).

  Returns:
    (log_prob float32 [N] in nats, nfe int32 scalar). nfe is the solver's
    num_ode_fn_evaluations: each counts ONE score evaluation together with
    its divergence, which adds D (exact) or K (Hutchinson) vector-Jacobian
    products (each about the cost of one more score evaluation) on top.

  Raises:
    ValueError (one line): rtol or atol <= 0, eps outside (0, T),
      hutchinson_probes < 1 or not an integer, an unknown probe, no seed for
      Hutchinson, x without a data axis, exact_trace over MAX_EXACT_TRACE_DIMS.
    tf.errors.InvalidArgumentError: x not finite, or a solve past MAX_SOLVER_STEPS.
  """
  parts = log_likelihood_parts(score_fn, sde, x, seed, exact_trace=exact_trace,
                               hutchinson_probes=hutchinson_probes, probe=probe, rtol=rtol,
                               atol=atol, eps=eps)
  return parts.log_prob, parts.nfe


# --- Bits per dimension -------------------------------------------------------


def data_log_prob(log_prob_nats, num_dims, *, data_scale=1.0, data_shift=0.0, logit_alpha=None,
                  x_model=None):
  """log p_y(y) in nats of dequantised data y ∈ [0, 1)^D, from log p_x(x) in the model's space.

  The model's space is reached from y by, in order,
      w = logit(λ + (1 − 2λ) y)   if logit_alpha = λ is given (else w = y),
      x = a w + b                 (a = data_scale, b = data_shift),
  and the change of variables p_y(y) = p_x(x) |det ∂x/∂y| gives
      log p_y(y) = log p_x(x) + D log|a| + Σ_i log(dw_i/dy_i),
      dw/dy = (1 − 2λ) / (p (1 − p)),  p = λ + (1 − 2λ) y = sigmoid(w),
  so Σ_i log(dw_i/dy_i) = Σ_i [log(1 − 2λ) + softplus(w_i) + softplus(−w_i)]
  (log p = −softplus(−w), log(1 − p) = −softplus(w); no loss of digits
  near p = 0 or 1), with w = (x − b)/a recovered from x_model.

  This package: images.py feeds models y itself (a = 1, b = 0; the networks'
  internal 2y − 1 is part of the network, not of the density's space) or,
  with --logit_transform, w with λ = images.LOGIT_LAMBDA (1e-6). score_sde's
  centred data is a = 2, b = −1.

  Args:
    log_prob_nats: float [N], log p_x(x) of the model at x.
    num_dims: D, the number of dimensions of one example (H·W·C).
    data_scale, data_shift: a != 0 and b.
    logit_alpha: λ in (0, 0.5), or None for no logit transform.
    x_model: float [N, ...] the points x in the model's space; needed (only)
      with logit_alpha, whose log-det depends on the point.

  Returns:
    float32 [N], computed in float64.
  """
  return tf.cast(_data_log_prob64(log_prob_nats, num_dims, data_scale, data_shift, logit_alpha,
                                  x_model), tf.float32)


def _data_log_prob64(log_prob_nats, num_dims, data_scale, data_shift, logit_alpha, x_model):
  """`data_log_prob` in float64 (a tensor [N])."""
  _check(isinstance(num_dims, (int, np.integer)) and num_dims >= 1,
         f'num_dims must be an integer >= 1, got {num_dims!r}')
  _check(data_scale != 0, 'data_scale must be nonzero')
  log_prob = tf.cast(log_prob_nats, tf.float64)
  log_prob += num_dims * np.log(abs(float(data_scale)))
  if logit_alpha is not None:
    _check(0 < logit_alpha < 0.5, f'logit_alpha must be in (0, 0.5), got {logit_alpha}')
    _check(x_model is not None, 'the logit transform\'s log-det depends on the point: pass x_model')
    w = (tf.cast(x_model, tf.float64) - float(data_shift)) / float(data_scale)
    axes = tf.range(1, tf.rank(w))
    model_dims = int(np.prod(w.shape[1:]))
    _check(model_dims == num_dims,
           f'x_model has {model_dims} dimensions per example, num_dims is {num_dims}')
    per_dim = np.log1p(-2.0 * logit_alpha) + tf.math.softplus(w) + tf.math.softplus(-w)
    log_prob += tf.reduce_sum(per_dim, axis=axes)
  return log_prob


def bits_per_dim(log_prob_nats, num_dims, *, data_scale=1.0, data_shift=0.0, logit_alpha=None,
                 x_model=None):
  """Bits per dimension in 8-bit pixel units from the model's log-density log p_x(x) in nats.

  Images are stored as integers k ∈ {0..255}^D and dequantised as
  y = (k + u)/256, u ~ U[0, 1)^D (images.dequantize: k/255 · 255/256 + u/256,
  the same thing), so y ∈ [0, 1)^D and pixel k owns the cell [k, k+1)/256 of
  volume 256^−D. A density p_y on y assigns k the probability
      P(k) = ∫_cell p_y ≥ exp(E_u[log p_y((k + u)/256)]) · 256^−D   (Jensen),
  so −log2 P(k)/D ≤ E_u[bpd(y)] with

      bpd = −(log p_x(x) + D log|a| + Σ log dw/dy − D log 256) / (D log 2)
          = 8 − log p_y(y) / (D log 2),

  log p_y as in `data_log_prob` (the model's space x = a·w + b, w = y or its
  logit). One u per image gives an unbiased estimate of that upper bound;
  repeat over u and average to reduce its variance. Checks: a uniform
  density on [0, 1)^D (log p_y = 0) is exactly 8 bits/dim; forgetting the
  dequantisation (a density squeezed on the grid) is what gives negative
  bits/dim.

  score_sde adds `7 - inverse_scaler(-1.)` to −log p_x/(D log 2): its
  inverse scaler maps the model's range back to [0, 1], so inverse_scaler(−1)
  is 0 for centred data (x = 2y − 1, offset 7) and −1 for uncentred (x = y,
  offset 8). Both equal 8 − log2|a| (the D log 256 and D log|a| terms here),
  but only for those two scalers: it is not a general formula.

  Args, returns: as `data_log_prob` (float32 [N] bits per dimension).
  """
  log_prob_y = _data_log_prob64(log_prob_nats, num_dims, data_scale, data_shift, logit_alpha,
                                x_model)
  return tf.cast(UNIFORM_BPD - log_prob_y / (num_dims * np.log(2.0)), tf.float32)


def _to_model_space(images, rng, data_scale, data_shift, logit_alpha):
  """Integer images [N, ...] (0..255) -> dequantised x [N, D] float64 in the model's space."""
  k = np.asarray(images)
  _check(k.ndim >= 2, f'images must be [N, ...] with at least one data axis, got shape {k.shape}')
  _check(np.all(k == np.round(k)) and k.min() >= 0 and k.max() <= 255,
         'images must hold 8-bit integer values 0..255 (before dequantisation)')
  k = k.reshape(len(k), -1).astype(np.float64)
  y = (k + rng.uniform(size=k.shape)) / 256.0
  if logit_alpha is not None:
    p = logit_alpha + (1.0 - 2.0 * logit_alpha) * y
    # log(1 − p) from 1 − y, as images.logit_transform does, for symmetry.
    y = np.log(p) - np.log(logit_alpha + (1.0 - 2.0 * logit_alpha) * (1.0 - y))
  return data_scale * y + data_shift


def gaussian_baseline_bpd(train_images, test_images, *, data_scale=1.0, data_shift=0.0,
                          logit_alpha=None, seed=0):
  """Bits/dim on test images of the full-covariance Gaussian fitted to training images.

  Both sets are dequantised (y = (k + u)/256, u ~ U[0, 1), from
  numpy's default_rng(seed): train's noise first, then test's) and mapped to
  the model's space x (see `data_log_prob`); the Gaussian N(m, S) takes the
  training mean and maximum-likelihood covariance (divide by N) there, and
  its exact log-density on the test points goes through `bits_per_dim`.
  Closed form, float64 (Cholesky of S). The baseline a model must beat; the
  uniform one is UNIFORM_BPD = 8. Affine maps of the data (a, b) leave it
  unchanged: the fitted Gaussian moves with the data.

  Args:
    train_images, test_images: integer values 0..255, [N, ...] (same
      dimensions per example); train needs N > D for a full-rank covariance.
    data_scale, data_shift, logit_alpha: the model's space, as `data_log_prob`.
    seed: int seed of the dequantisation noise.

  Returns:
    float64 numpy [N_test]: bits/dim of each test image (average them).
  """
  rng = np.random.default_rng(seed)
  train = _to_model_space(train_images, rng, data_scale, data_shift, logit_alpha)
  test = _to_model_space(test_images, rng, data_scale, data_shift, logit_alpha)
  num, dims = train.shape
  _check(test.shape[1] == dims, f'train images have {dims} dimensions, test images {test.shape[1]}')
  _check(num > dims, f'a full-covariance Gaussian needs more training images ({num}) '
                     f'than dimensions ({dims})')
  mean = train.mean(axis=0)
  centred = train - mean
  chol = np.linalg.cholesky(centred.T @ centred / num)
  whitened = np.linalg.solve(chol, (test - mean).T)                   # [D, N_test]
  log_prob = (-0.5 * np.sum(whitened**2, axis=0) - np.sum(np.log(np.diag(chol)))
              - 0.5 * dims * np.log(2.0 * np.pi))
  # The conversion is shared with the model's, so the two numbers printed
  # side by side are in the same units by construction.
  bpd = bits_per_dim(log_prob, dims, data_scale=data_scale, data_shift=data_shift,
                     logit_alpha=logit_alpha, x_model=test if logit_alpha is not None else None)
  return bpd.numpy().astype(np.float64)
