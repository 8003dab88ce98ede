"""Adaptive-step reverse-SDE solver (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast When
Generating Data with Score-Based Models", Algorithm 1).

The reverse-time SDE dx = [f(x, t) − g(t)² ∇ log p_t(x)] dt + g(t) dw̄ is
integrated from T down to eps with two solutions per step on one Brownian
increment (z ~ N(0, I), a step h > 0 from t to t − h):

    K1 = −h F(x, t) + g(t) sqrt(h) z,              x' = x + K1            (Euler-Maruyama)
    K2 = −h F(x', t − h) + g(t − h) sqrt(h) z,     x'' = x + ½ (K1 + K2)  (improved Euler)

with F = f − g² s the reverse drift (noise.SDE.reverse_drift). The local error
estimate is x'' − x', scaled per element by the mixed tolerance

    δ = max(ε_abs, ε_rel · max(|x'|, |x'_prev|))          (x'_prev: the last accepted x')
    E = ‖(x'' − x')/δ‖₂ / sqrt(D)                            (D: elements per example)

A step is accepted when E <= 1; the state then moves to x'' (the paper's
choice: the higher-order value) and x'_prev to x'. Either way the next step is
h ← min(t − eps, θ h E^{−r}) with θ = 0.9 and r = 0.9 (the paper's), so a
rejected step retries shorter, with a fresh z as in the paper.

Step control (`step_control`):
- 'batch' (the default here): one E for the whole batch, the RMS over all its
  N·D elements, so one t and h for all.
- 'per_example' (the paper's): t, h and E are [N]; each example accepts,
  rejects and finishes on its own (masked updates in one tf.while_loop). Every
  iteration still evaluates the score for the whole batch twice, so NFE is the
  batch's cost, as the paper counts it.
Why 'batch' by default: retrying a rejected step with a fresh z selects the
Brownian increments by their size wherever E depends on z, and with few
elements per example it does. On a 2-D Gaussian (VP, ε_rel = 0.01, 4000
samples) per-example control gave the variance 3.1 for 2.0 at any tolerance;
with 256 independent pairs per example (512 elements in E) 2.04, and batch
control on 2-D data is right (tests/test_sde_samplers.py). Images have
thousands of elements per example, where per-example control is fine and may
spend fewer evaluations (docs/sde.md, "The sampler sweep").

NFE = 2 per iteration (accepted or not), + 1 for the final denoising
(Tweedie's E[x_0 | x_eps] = (x + std² s)/α, with `denoise`).

Never hangs: the loop stops when every example has reached eps, or has
failed (its step fell below MIN_STEP: a non-finite error estimate, e.g. a NaN
score, shrinks h tenfold per try), or at max_nfe. `adaptive_sde_solve`
returns which examples finished; `adaptive_sde_sample` (the sampler contract)
raises tf.errors.InvalidArgumentError from inside the graph if any did not
(on_limit='raise', the default) or returns them as they are ('return').

Tolerances are in data units: the paper used ε_abs = 0.0078 (2/256, one 8-bit
level of [−1, 1] data) for VP and 0.0039 for VE on [0, 1], with ε_rel = 0.01
(its code's default) to 0.05 (its faster setting). Scale ε_abs with the
data's range.

Conditions (conditions.py) by replacement, as pc.py does without a corrector:
at the start and after every accepted step the known coordinates are set to
α(t) known + std(t) z at the example's new t, z fresh. Where the unknown
coordinates depend on the known ones this is biased (tests/test_conditions.py,
PC without a corrector); for an unbiased condition use dpm_solver or
edm_stochastic with --condition_method=langevin.
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.noise import expand_to
from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling.samplers import registry

#: The paper's ε_abs for VP on [−1, 1] data (2/256).
DEFAULT_ABS_TOL = 0.0078
#: The official code's default ε_rel.
DEFAULT_REL_TOL = 0.01
#: The official code's first step h (in t; T = 1 there).
DEFAULT_H_INIT = 0.01
#: θ and r of the step-size update h ← θ h E^{−r} (paper and code).
DEFAULT_SAFETY = 0.9
DEFAULT_EXPONENT = 0.9
#: The hard budget of score evaluations.
DEFAULT_MAX_NFE = 10_000
STEP_CONTROLS = ('batch', 'per_example')
#: A step below this (in t; the official code's h_min) means the example is stuck.
MIN_STEP = 1e-10
#: How much a step shrinks when its error estimate is not finite (NaN or inf): E^{−r}
#: means nothing there, and tenfold cuts reach MIN_STEP from 0.01 in 8 tries.
NONFINITE_SHRINK = 0.1
ON_LIMIT = ('raise', 'return')


def check_settings(sde, *, abs_tol, rel_tol, h_init, safety, exponent, max_nfe, step_control,
                   sampling_eps, denoise, on_limit):
  """Raises ValueError (one line; a SettingError for a setting) before any work; returns eps."""
  if not isinstance(sde, noise.SDE):
    raise ValueError(f'sde must be a noise.SDE (VESDE, VPSDE, SubVPSDE), got {type(sde).__name__}')
  if not abs_tol > 0:
    raise registry.SettingError('abs_tol', f'must be > 0, got {abs_tol}')
  if not rel_tol >= 0:
    raise registry.SettingError('rel_tol', f'must be >= 0, got {rel_tol}')
  if not 0 < h_init <= sde.T:
    raise registry.SettingError('h_init', f'must be in (0, T={sde.T:g}], got {h_init}')
  if not 0 < safety <= 1:
    raise registry.SettingError('safety', f'must be in (0, 1], got {safety}')
  if not exponent > 0:
    raise registry.SettingError('exponent', f'must be > 0, got {exponent}')
  least = 2 + int(bool(denoise))
  if not (isinstance(max_nfe, (int, np.integer)) and max_nfe >= least):
    raise registry.SettingError('max_nfe', f'must be an integer >= {least} (2 per step'
                                f'{", 1 to denoise" if denoise else ""}), got {max_nfe!r}')
  if step_control not in STEP_CONTROLS:
    raise registry.SettingError('step_control', f'must be one of {", ".join(STEP_CONTROLS)}, '
                                f'got {step_control!r}')
  if on_limit not in ON_LIMIT:
    raise registry.SettingError('on_limit', f'must be one of {", ".join(ON_LIMIT)}, '
                                f'got {on_limit!r}')
  return sde.sampling_eps(sampling_eps)


def _scaled_error_norm(error, x_em, x_em_prev, abs_tol, rel_tol):
  """E [N] = sqrt(mean over elements of (error/δ)²), δ = max(ε_abs, ε_rel max(|x'|, |x'_prev|))."""
  tolerance = tf.maximum(abs_tol, rel_tol * tf.maximum(tf.abs(x_em), tf.abs(x_em_prev)))
  axes = tf.range(1, tf.rank(error))
  return tf.sqrt(tf.reduce_mean((error / tolerance)**2, axis=axes))


def _next_step(h, error_norm, t, eps, safety, exponent):
  """h ← min(t − eps, θ h E^{−r}) [N]; E = 0 (no error) goes to the end; E non-finite shrinks."""
  finite = tf.math.is_finite(error_norm)
  # E^{−r} at E = 0 is inf: θ h inf = inf, capped by t − eps; h = 0 guards 0·inf.
  grown = tf.where(h > 0, safety * h * tf.pow(tf.where(finite, error_norm, 1.0), -exponent), 0.0)
  return tf.where(finite, tf.minimum(t - eps, grown), NONFINITE_SHRINK * h)


def adaptive_sde_solve(score_fn, sde, x_init, seed, condition=None, callback=None, *,
                       abs_tol=DEFAULT_ABS_TOL, rel_tol=DEFAULT_REL_TOL, h_init=DEFAULT_H_INIT,
                       safety=DEFAULT_SAFETY, exponent=DEFAULT_EXPONENT, max_nfe=DEFAULT_MAX_NFE,
                       step_control='batch', sampling_eps=None, denoise=True):
  """The solve with its diagnostics: (samples [N, ...], nfe int32, finished bool [N], t float32 [N]).

  Arguments as `adaptive_sde_sample`. finished[n] says whether example n reached
  eps; t[n] is where it stopped (eps when finished). Never raises for the limit.
  """
  eps = check_settings(sde, abs_tol=abs_tol, rel_tol=rel_tol, h_init=h_init, safety=safety,
                       exponent=exponent, max_nfe=max_nfe, step_control=step_control,
                       sampling_eps=sampling_eps, denoise=denoise, on_limit='return')
  x_init = tf.convert_to_tensor(x_init, tf.float32)
  condition = conditions.prepare(condition, x_init)
  max_iterations = (max_nfe - int(bool(denoise))) // 2
  settings = tf.constant([abs_tol, rel_tol, h_init, safety, exponent], tf.float32)
  return _adaptive_loop(score_fn, sde, x_init, tf.cast(seed, tf.int32), settings,
                        tf.constant(max_iterations, tf.int32), float(eps), bool(denoise),
                        step_control == 'batch', condition, callback)


def adaptive_sde_sample(score_fn, sde, x_init, seed, condition=None, callback=None, *,
                        abs_tol=DEFAULT_ABS_TOL, rel_tol=DEFAULT_REL_TOL, h_init=DEFAULT_H_INIT,
                        safety=DEFAULT_SAFETY, exponent=DEFAULT_EXPONENT,
                        max_nfe=DEFAULT_MAX_NFE, step_control='batch', sampling_eps=None,
                        denoise=True, on_limit='raise'):
  """Adaptive reverse-SDE sampling from T to eps (then Tweedie's denoiser).

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> score of p_t (called with per-example t).
    sde: a noise.SDE.
    x_init: float32 [N, ...] prior draws at t = T.
    seed: int32 [2] stateless seed (iteration k draws from fold_in(seed, k)).
    condition: None or a conditions.Condition, by replacement (module docstring).
    callback: None, or fn(step, num_steps, x) run on the host after every iteration,
      num_steps being the budget max_nfe // 2 (the solve usually ends before it).
    abs_tol: ε_abs > 0 in data units (the paper: 0.0078 for [−1, 1] data).
    rel_tol: ε_rel >= 0 (code default 0.01; the paper 0.01-0.05).
    h_init: the first step in (0, T] (code: 0.01).
    safety, exponent: θ in (0, 1] and r > 0 of h ← θ h E^{−r} (both 0.9).
    max_nfe: the hard budget of score evaluations (>= 2, + 1 with denoise).
    step_control: 'batch' or 'per_example' (module docstring).
    sampling_eps: the end time in (0, 1); None: the SDE's default.
    denoise: finish with Tweedie's E[x_0 | x_eps] (+1 NFE).
    on_limit: 'raise' (InvalidArgumentError if an example did not reach eps) or 'return'.

  Returns:
    (samples float32 [N, ...], nfe int32 = 2 × iterations, + 1 with denoise).
  """
  check_settings(sde, abs_tol=abs_tol, rel_tol=rel_tol, h_init=h_init, safety=safety,
                 exponent=exponent, max_nfe=max_nfe, step_control=step_control,
                 sampling_eps=sampling_eps, denoise=denoise, on_limit=on_limit)
  samples, nfe, finished, _ = adaptive_sde_solve(
      score_fn, sde, x_init, seed, condition, callback, abs_tol=abs_tol, rel_tol=rel_tol,
      h_init=h_init, safety=safety, exponent=exponent, max_nfe=max_nfe,
      step_control=step_control, sampling_eps=sampling_eps, denoise=denoise)
  if on_limit == 'raise':
    unfinished = tf.reduce_sum(tf.cast(tf.logical_not(finished), tf.int32))
    check = tf.debugging.Assert(
        tf.equal(unfinished, 0),
        ['adaptive_sde: examples that did not reach sampling_eps (a step below MIN_STEP, e.g. '
         'from a non-finite score, or --adaptive_max_nfe reached):', unfinished, 'after NFE', nfe])
    with tf.control_dependencies([check]):
      samples = tf.identity(samples)
  return samples, nfe


@tf.function(reduce_retracing=True)
def _adaptive_loop(score_fn, sde, x_init, seed, settings, max_iterations, eps, denoise,
                   batch_control, condition, callback=None):
  """The adaptive loop in one graph; settings = [ε_abs, ε_rel, h_init, θ, r]."""
  hook = callbacks.step_hook(callback)
  abs_tol, rel_tol, h_init, safety, exponent = tf.unstack(settings)
  batch = tf.shape(x_init)[0]
  fold_in = tf.random.experimental.stateless_fold_in

  def impose(x, t, step):  # The known coordinates at each example's own t, fresh noise.
    return condition.impose(x, sde.mean_coeff(t), sde.std(t),
                            conditions.replacement_noise(seed, step, x))

  def body(k, x, x_em_prev, t, h, failed):
    active = (t > eps) & tf.logical_not(failed)
    h = tf.where(active, tf.minimum(h, t - eps), 0.0)
    reaches_end = active & (h >= t - eps)
    t_next = tf.where(reaches_end, eps, t - h)       # exactly eps at the end
    z = tf.random.stateless_normal(tf.shape(x), fold_in(seed, k))
    sqrt_h = expand_to(tf.sqrt(h), x)

    def increment(x, t):  # −h F(x, t) + g(t) sqrt(h) z, as sqrt(h) (g z − sqrt(h) F): a
      # product between the sums, so that grappler finds no chain of adds to merge into
      # an AddN in the loop (langevin.langevin_update explains why that matters).
      drift = sde.reverse_drift(x, t, score_fn(x, t))
      return sqrt_h * (expand_to(sde.sde(x, t)[1], x) * z - sqrt_h * drift)

    k1 = increment(x, t)
    x_em = x + k1
    k2 = increment(x_em, t_next)
    x_heun = x + 0.5 * (k1 + k2)
    error_norm = _scaled_error_norm(x_heun - x_em, x_em, x_em_prev, abs_tol, rel_tol)
    if batch_control:  # The RMS over all elements: each example's E² is its elements' mean.
      error_norm = tf.fill([batch], tf.sqrt(tf.reduce_mean(error_norm**2)))
    accept = active & (error_norm <= 1.0)                # NaN <= 1 is False: rejected
    accepted = expand_to(tf.cast(accept, tf.float32), x) > 0.5
    x = tf.where(accepted, x_heun, x)
    x_em_prev = tf.where(accepted, x_em, x_em_prev)
    t = tf.where(accept, t_next, t)
    if condition is not None:
      x = tf.where(accepted, impose(x, t, k), x)
    h = tf.where(active, _next_step(h, error_norm, t, eps, safety, exponent), 0.0)
    failed = failed | (active & (t > eps) & (h < MIN_STEP))
    hook(k + 1, max_iterations, x)
    return k + 1, x, x_em_prev, t, h, failed

  def unfinished(k, x, x_em_prev, t, h, failed):
    return (k < max_iterations) & tf.reduce_any((t > eps) & tf.logical_not(failed))

  t = tf.fill([batch], tf.constant(sde.T, tf.float32))
  x = x_init if condition is None else impose(x_init, t, -1)
  state = (tf.constant(0), x, x, t, tf.fill([batch], h_init), tf.zeros([batch], tf.bool))
  iterations, x, _, t, _, _ = tf.while_loop(unfinished, body, state)
  nfe = 2 * iterations
  if denoise:  # Tweedie at each example's own t (eps unless it stopped early).
    x = (x + expand_to(sde.std(t)**2, x) * score_fn(x, t)) / expand_to(sde.mean_coeff(t), x)
    nfe += 1
    if condition is not None:
      x = condition.impose(x, 1.0, 0.0, tf.zeros_like(x))
  return x, nfe, t <= eps, t


registry.register(registry.SamplerSpec(
    name='adaptive_sde', sample=adaptive_sde_sample, check=check_settings,
    settings={'abs_tol': 'adaptive_atol', 'rel_tol': 'adaptive_rtol', 'max_nfe': 'adaptive_max_nfe',
              'step_control': 'adaptive_step_control', 'sampling_eps': 'sampling_eps',
              'denoise': 'denoise'},
    doc='adaptive reverse-SDE solver (Jolicoeur-Martineau et al. 2021): Euler-Maruyama and '
        'improved Euler on one increment, error-controlled steps; 2 NFE per try, + 1 to denoise'))
