"""The probability-flow ODE (Song et al. 2021, section 4.3) with TFP's adaptive solver.

dx/dt = f(x, t) − ½ g(t)² ∇ log p_t(x) moves samples of p_T to samples of
p_0 deterministically (and back: `ode_encode`). It is integrated in t, not in
σ: for the VE SDE, dx/dσ = −σ ∇log p_σ(x) has a Jacobian of order 1/σ near the
data (100 at σ_min = 0.01: stiff), while in t the factor g(t)² = 2σ² log(σ_max/σ_min)
cancels the 1/σ² of the score's Jacobian, leaving an order of log(σ_max/σ_min) (7.6
for the toy) at every t; the toy's ODE takes 48-66 evaluations at rtol 1e-3
(docs/sde.md, "Which sampler").

TFP's DormandPrince only integrates towards larger times, so a solve from
t_start to t_end runs in τ = |t − t_start| ∈ [0, |t_end − t_start|], with
t = t_start + sign·τ and dx/dτ = sign·dx/dt. Solves run inside tf.function
(eagerly, the same solve had not finished in 10 minutes).

NFE counts every score evaluation: the solver's diagnostics'
num_ode_fn_evaluations, plus the one it does not count (`UNCOUNTED_EVALUATIONS`),
plus one for `denoise`.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from ncsn_tf.noise import expand_to
from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling.samplers import registry

#: The most steps any probability-flow solve may take (the ODE sampler's, encoding, and
#: ncsn_tf/likelihood.py's): 6x the slowest solve measured (shapes likelihood at rtol
#: 1e-5: 3834 evaluations, about 640 steps of 6), so a solve that meets it is not
#: converging (a non-finite state, a score that explodes): it fails with an
#: InvalidArgumentError "max_num_steps exceeded" instead of running forever.
MAX_SOLVER_STEPS = 4096

#: Drift evaluations TFP's DormandPrince makes but leaves out of num_ode_fn_evaluations:
#: one at each solution time, where it interpolates the state and evaluates the drift
#: there (dormand_prince.py, _dense_solutions_to_final_time). These solves ask for one
#: time. tests/test_sde_samplers.py counts the score calls in the graph.
UNCOUNTED_EVALUATIONS = 1


def ode_drift(score_fn, sde):
  """The probability-flow ODE's dx/dt as fn(x [N, ...], t float32 [N]) -> [N, ...].

  The same field serves sampling (T -> eps), encoding (eps -> T) and a
  likelihood's divergence (its trace).
  """
  return lambda x, t: sde.reverse_drift(x, t, score_fn(x, t), probability_flow=True)


def check_settings(sde, *, rtol, atol, sampling_eps, denoise):
  """Raises ValueError (one line) on a bad setting; returns the resolved sampling eps."""
  del denoise
  if not rtol > 0:
    raise registry.SettingError('rtol', f'must be > 0, got {rtol}', label='ode rtol')
  if not atol > 0:
    raise registry.SettingError('atol', f'must be > 0, got {atol}', label='ode atol')
  return sde.sampling_eps(sampling_eps)


def solve_ode(drift_fn, x, t_start, t_end, rtol, atol):
  """x(t_end) of dx/dt = drift_fn(x, t) from x(t_start) = x, either direction.

  Call it inside tf.function (as `ode_sample` and `ode_encode` do): eagerly
  every solver step is a host round trip.

  Args:
    drift_fn: (x [N, ...], t float32 [N]) -> dx/dt [N, ...].
    x: float32 [N, ...].
    t_start, t_end: python floats, t_start != t_end.
    rtol, atol: DormandPrince's tolerances (> 0, floats or float32 tensors); the error norm is taken over
      the whole batch, so every example shares the step sizes.

  Returns:
    (x(t_end) float32 [N, ...], nfe int32: every drift evaluation of the solve).
  """
  sign = 1.0 if t_end > t_start else -1.0
  batch = tf.shape(x)[0]
  t_low, t_high = min(t_start, t_end), max(t_start, t_end)

  def tau_drift(tau, y):
    # DormandPrince's last step overshoots the end and interpolates back, so
    # it evaluates the drift a little past t_end: below eps that would be
    # t < 0 (VP's std is NaN there, a network never saw it). Hold t at the end.
    t = tf.clip_by_value(t_start + sign * tau, t_low, t_high)
    return sign * drift_fn(y, tf.fill([batch], t))

  solver = tfp.math.ode.DormandPrince(rtol=rtol, atol=atol, max_num_steps=MAX_SOLVER_STEPS)
  results = solver.solve(tau_drift, initial_time=0.0, initial_state=x,
                         solution_times=[abs(t_end - t_start)])
  nfe = tf.cast(results.diagnostics.num_ode_fn_evaluations, tf.int32) + UNCOUNTED_EVALUATIONS
  return results.states[-1], nfe


@tf.function(reduce_retracing=True)
def _solve_probability_flow(score_fn, sde, x, t_start, t_end, rtol, atol, condition=None):
  # One trace per (score_fn, sde, direction): the drift closure is built
  # inside and the tolerances come in as tensors, so repeated calls with the
  # same score_fn reuse the graph, at any tolerance. A condition (a structure
  # of tensors) enters the score here too, for the same reason.
  if condition is not None:
    score_fn = conditions.conditioned_flow_score(score_fn, sde, condition)
  return solve_ode(ode_drift(score_fn, sde), x, t_start, t_end, rtol, atol)


def _tolerances(rtol, atol):
  return tf.constant(rtol, tf.float32), tf.constant(atol, tf.float32)


def _tweedie(score_fn, sde, x, t):
  """E[x_0 | x_t] = (x + std² s)/α: removes the noise left at t (one score evaluation)."""
  std = sde.std(t)
  return (x + expand_to(std**2, x) * score_fn(x, t)) / expand_to(sde.mean_coeff(t), x)


def ode_sample(score_fn, sde, x_init, seed=None, condition=None, callback=None, *, rtol=1e-5,
               atol=1e-5, sampling_eps=None, denoise=False):
  """Samples by integrating the probability-flow ODE from T to eps.

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> score of p_t.
    sde: a noise.SDE.
    x_init: float32 [N, ...] prior draws at t = T.
    seed: unused (the ODE is deterministic); kept for the common sampler contract.
    condition: None, or a sampling.conditions.Condition. The adaptive solver
      cannot be stopped after each step to replace the known coordinates, so
      the condition enters the drift (conditions.flow_score): the known
      coordinates follow the probability-flow path α(t) known + std(t) z of the
      known values, z read off x_init (the solve stays deterministic in
      x_init), and the network's score moves the rest; at the end the known
      coordinates are set to the path's end, removing the solver's error
      (with denoise: the known values).
    rtol, atol: DormandPrince tolerances, > 0 (score_sde's defaults: 1e-5).
    sampling_eps: the end time in (0, 1); None: the SDE's default.
    denoise: finish with Tweedie's denoiser at eps (+1 NFE).
    callback: None, or fn(step, num_steps, x), called once at the end (1, 1, x):
      the adaptive solver's steps are internal to it.

  Returns:
    (samples float32 [N, ...], nfe int32).
  """
  del seed
  eps = check_settings(sde, rtol=rtol, atol=atol, sampling_eps=sampling_eps, denoise=denoise)
  x_init = tf.convert_to_tensor(x_init, tf.float32)
  condition = conditions.prepare(condition, x_init)
  x, nfe = _solve_probability_flow(score_fn, sde, x_init, sde.T, eps, *_tolerances(rtol, atol),
                                   condition)
  if condition is not None:
    batch = tf.shape(x)[0]
    z = condition.path_noise(x_init, sde.mean_coeff(tf.fill([batch], sde.T)),
                             sde.std(tf.fill([batch], sde.T)))
    end = tf.fill([batch], eps)
    x = condition.impose(x, sde.mean_coeff(end), sde.std(end), z)
    score_fn = conditions.conditioned_flow_score(score_fn, sde, condition)
  if denoise:
    x = _tweedie(score_fn, sde, x, tf.fill([tf.shape(x)[0]], eps))
    nfe += 1
    if condition is not None:  # Noise-free: the known values (Tweedie gives them up to round-off).
      x = condition.impose(x, 1.0, 0.0, tf.zeros_like(x))
  # The adaptive solve has no steps of its own to report: the callback sees its end.
  callbacks.step_hook(callback)(1, 1, x)
  return x, nfe


def ode_encode(score_fn, sde, x0, *, rtol=1e-5, atol=1e-5, sampling_eps=None):
  """The inverse map: data x0 [N, ...] at t = eps to its latent at T; (latent, nfe)."""
  eps = check_settings(sde, rtol=rtol, atol=atol, sampling_eps=sampling_eps, denoise=False)
  return _solve_probability_flow(score_fn, sde, tf.convert_to_tensor(x0, tf.float32), eps, sde.T,
                                 *_tolerances(rtol, atol))


registry.register(registry.SamplerSpec(
    name='ode', sample=ode_sample, check=check_settings,
    settings={'rtol': 'ode_rtol', 'atol': 'ode_atol', 'sampling_eps': 'sampling_eps',
              'denoise': 'denoise'},
    doc='the probability-flow ODE (Song et al. 2021) by adaptive Dormand-Prince; '
        'deterministic, NFE set by the tolerances'))
