"""Predictor-corrector sampling of a score SDE (Song et al. 2021, section 4.2, Algorithms 2-3).

The reverse-time SDE is integrated on a time grid from T down to eps in
`num_steps` steps. At each grid time t the corrector first moves x towards
p_t by Langevin-type MCMC, then the predictor takes one reverse step t -> t − dt.

Contract shared by every sampler in this package:

    score_fn(x float32 [N, ...], t float32 [N]) -> ∇ log p_t(x) [N, ...]
    seed: int32 [2], stateless; step i draws from fold_in(seed, i)
    returns (samples float32 [N, ...], nfe int32 scalar: score evaluations)

Predictors: (score_fn, sde, x, t [N], dt, seed) -> (x, x_mean), one score
evaluation; x_mean is the step without its fresh noise. Correctors:
(score_fn, sde, x, t, dt, seed, snr, num_steps) -> (x, x_mean), num_steps
evaluations.
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.noise import expand_to
from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import langevin as langevin_kernel
from ncsn_tf.sampling.samplers import registry


def _noise_like(x, seed):
  return tf.random.stateless_normal(tf.shape(x), seed)


def _per_example_norm(v):
  """‖v‖ over the non-batch axes: float32 [N]."""
  return tf.sqrt(tf.reduce_sum(v**2, axis=tf.range(1, tf.rank(v))))


def time_grid(sde, num_steps: int, sampling_eps: float) -> np.ndarray:
  """float32 [num_steps + 1]: T = t_0 > t_1 > ... > t_N = eps, evenly spaced."""
  return np.linspace(sde.T, sampling_eps, num_steps + 1).astype(np.float32)


# Predictors ---------------------------------------------------------------------------


def euler_maruyama(score_fn, sde, x, t, dt, seed):
  """x ← x − (f − g² s) dt + g sqrt(dt) z: the reverse SDE's Euler-Maruyama step."""
  drift = sde.reverse_drift(x, t, score_fn(x, t))
  _, diffusion = sde.sde(x, t)
  x_mean = x - drift * dt
  return x_mean + expand_to(diffusion * tf.sqrt(dt), x) * _noise_like(x, seed), x_mean


def reverse_diffusion(score_fn, sde, x, t, dt, seed):
  """The SDE's own discretisation run backwards: x ← x − f + G² s + G z.

  For VE this is SMLD's reverse step, for VP DDPM's (to first order).
  """
  f, g = sde.discretize(x, t, dt)
  x_mean = x - f + expand_to(g**2, x) * score_fn(x, t)
  return x_mean + expand_to(g, x) * _noise_like(x, seed), x_mean


def ancestral(score_fn, sde, x, t, dt, seed):
  """Ancestral sampling of the discrete chain: SMLD's for VE, DDPM's for VP.

  VE: with σ = σ(t), σ' = σ(t − dt), x ← x + (σ² − σ'²) s + sqrt(σ'²(σ² − σ'²)/σ²) z,
  the exact posterior step of the Gaussian ladder. VP: β = β(t) dt,
  x ← (x + β s)/sqrt(1 − β) + sqrt(β) z. Not defined for sub-VP.
  """
  score = score_fn(x, t)
  if isinstance(sde, noise.VESDE):
    sigma, sigma_next = sde.sigma(t), sde.sigma(t - dt)
    variance_step = sigma**2 - sigma_next**2
    x_mean = x + expand_to(variance_step, x) * score
    std = tf.sqrt(sigma_next**2 * variance_step / sigma**2)
  else:  # VPSDE; check_settings refuses sub-VP.
    beta = sde.beta(t) * dt
    x_mean = (x + expand_to(beta, x) * score) / expand_to(tf.sqrt(1.0 - beta), x)
    std = tf.sqrt(beta)
  return x_mean + expand_to(std, x) * _noise_like(x, seed), x_mean


def no_predictor(score_fn, sde, x, t, dt, seed):
  """Leave x as it is (corrector-only sampling)."""
  del score_fn, sde, t, dt, seed
  return x, x


# Correctors ---------------------------------------------------------------------------


def _langevin_alpha(sde, t, dt):
  """score_sde's α in the Langevin step: 1 − β_i for VP and sub-VP, 1 otherwise."""
  if isinstance(sde, noise.LinearBetaSDE):
    return 1.0 - sde.beta(t) * dt
  return tf.ones_like(t)


def _langevin_moves(score_fn, sde, x, t, dt, seed, num_steps, step_size_fn):
  """num_steps moves x ← x + ε s + sqrt(2ε) z, with ε [N] = step_size_fn(score, z)."""
  x_mean = x
  for j in range(num_steps):  # A handful of steps: unrolled in the graph.
    score = score_fn(x, t)
    z = _noise_like(x, tf.random.experimental.stateless_fold_in(seed, j))
    step = step_size_fn(score, z) * _langevin_alpha(sde, t, dt)
    x_mean = x + expand_to(step, x) * score
    x = x_mean + expand_to(tf.sqrt(2.0 * step), x) * z
  return x, x_mean


def langevin(score_fn, sde, x, t, dt, seed, snr, num_steps):
  """Langevin corrector with signal-to-noise ratio snr: ε = 2 α (snr ‖z‖/‖s‖)².

  As in score_sde, ‖z‖ and ‖s‖ are per-example norms averaged over the batch,
  one ε for all: per example, a sample sitting on a mode (s ≈ 0) would take a
  huge step, and in low dimension ‖s‖ of one sample varies a lot (on the
  paper's 2-D mixture per-example steps moved the weight 0.2 to 0.32). The
  price: the step depends on the batch. On several devices the chain still
  runs over the whole batch and only the score is split
  (sampling/distributed.py), so the average is the whole batch's there too.
  A score of norm zero (an untrained network) makes no move: see
  sampling/langevin.py `snr_step_size`.
  """
  def step_size(score, z):
    step = langevin_kernel.snr_step_size(tf.reduce_mean(_per_example_norm(z)),
                                         tf.reduce_mean(_per_example_norm(score)), snr)
    return tf.fill(tf.shape(t), step)
  return _langevin_moves(score_fn, sde, x, t, dt, seed, num_steps, step_size)


def ald(score_fn, sde, x, t, dt, seed, snr, num_steps):
  """Annealed-Langevin corrector: NCSN's step ε ∝ σ², here ε = 2 α (snr std(t))²."""
  def step_size(score, z):
    del score, z
    return 2.0 * (snr * sde.std(t))**2
  return _langevin_moves(score_fn, sde, x, t, dt, seed, num_steps, step_size)


def no_corrector(score_fn, sde, x, t, dt, seed, snr, num_steps):
  del score_fn, sde, t, dt, seed, snr, num_steps
  return x, x


#: name -> (predictor, score evaluations per call).
PREDICTORS = {
    'reverse_diffusion': (reverse_diffusion, 1),
    'euler_maruyama': (euler_maruyama, 1),
    'ancestral': (ancestral, 1),
    'none': (no_predictor, 0),
}
#: name -> corrector (it evaluates the score corrector_steps times, 'none' never).
CORRECTORS = {'langevin': langevin, 'ald': ald, 'none': no_corrector}


def _lookup(table, kind, name):
  if name not in table:
    raise ValueError(f'unknown {kind} {name!r}; choose from {sorted(table)}')
  return table[name]


def get_predictor(name: str):
  """The predictor step function of `name` (PREDICTORS)."""
  return _lookup(PREDICTORS, 'predictor', name)[0]


def get_corrector(name: str):
  """The corrector step function of `name` (CORRECTORS)."""
  return _lookup(CORRECTORS, 'corrector', name)


def check_settings(sde, *, predictor, corrector, num_steps, corrector_steps, snr, sampling_eps,
                   denoise):
  """Raises ValueError (one line) on a bad setting; returns the resolved sampling eps."""
  del denoise
  _lookup(PREDICTORS, 'predictor', predictor)
  _lookup(CORRECTORS, 'corrector', corrector)
  if not isinstance(sde, noise.SDE):
    raise ValueError(f'sde must be a noise.SDE (VESDE, VPSDE, SubVPSDE), got {type(sde).__name__}')
  if not (isinstance(num_steps, (int, np.integer)) and num_steps >= 1):
    raise registry.SettingError('num_steps', f'must be an integer >= 1, got {num_steps!r}')
  if not (isinstance(corrector_steps, (int, np.integer)) and corrector_steps >= 0):
    raise registry.SettingError('corrector_steps',
                                f'must be an integer >= 0, got {corrector_steps!r}')
  if not snr > 0:
    raise registry.SettingError('snr', f'must be > 0, got {snr}')
  if predictor == 'none' and (corrector == 'none' or corrector_steps == 0):
    raise ValueError('predictor none needs a corrector with corrector_steps >= 1')
  if predictor == 'ancestral' and not isinstance(sde, (noise.VESDE, noise.VPSDE)):
    raise ValueError(f'the ancestral predictor is defined for VE and VP SDEs, not {type(sde).__name__}')
  return sde.sampling_eps(sampling_eps)


def pc_sample(score_fn, sde, x_init, seed, condition=None, callback=None, *,
              predictor='reverse_diffusion',
              corrector='langevin', num_steps=1000, corrector_steps=1, snr=0.16, sampling_eps=None,
              denoise=True):
  """Predictor-corrector sampling from T to eps.

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> score of p_t, [N, ...].
    sde: a noise.SDE.
    x_init: float32 [N, ...], draws from the prior (sde.prior_sample).
    seed: int32 [2] stateless seed.
    condition: None, or a sampling.conditions.Condition: its known coordinates
      are replaced by α(t) known + std(t) z, z fresh, at the start, after every
      corrector move and after every predictor step (then at its new time), so
      every score evaluation sees them at its own t; with denoise the returned
      mean has them at α(eps) known (the known values for VE).
    predictor: a name in PREDICTORS.
    corrector: a name in CORRECTORS.
    num_steps: N >= 1 predictor steps.
    corrector_steps: corrector moves before each predictor step (>= 0).
    snr: the correctors' signal-to-noise ratio r (score_sde: 0.16 for VE on
      CIFAR-10, 0.01 for VP).
    sampling_eps: end time in (0, 1); None: score_sde's 1e-5 for VE, 1e-3 otherwise.
    denoise: return the last predictor step's mean (without its noise).
    callback: None, or fn(step, num_steps, x) run on the host after every
      predictor step (sampling/callbacks.py).

  Returns:
    (samples float32 [N, ...], nfe int32 = N·(predictor's + corrector_steps)).
  """
  eps = check_settings(sde, predictor=predictor, corrector=corrector, num_steps=num_steps,
                       corrector_steps=corrector_steps, snr=snr, sampling_eps=sampling_eps,
                       denoise=denoise)
  if corrector == 'none':
    corrector_steps = 0
  predictor_fn, predictor_nfe = PREDICTORS[predictor]
  x_init = tf.convert_to_tensor(x_init, tf.float32)
  samples = _pc_loop(score_fn, sde, x_init, tf.cast(seed, tf.int32),
                     predictor_fn, CORRECTORS[corrector], time_grid(sde, num_steps, eps),
                     corrector_steps, float(snr), bool(denoise), conditions.prepare(condition, x_init),
                     callback)
  return samples, tf.constant(num_steps * (predictor_nfe + corrector_steps), tf.int32)


@tf.function(reduce_retracing=True)
def _pc_loop(score_fn, sde, x_init, seed, predictor_fn, corrector_fn, grid, corrector_steps, snr,
             denoise, condition=None, callback=None):
  """The whole chain in one graph: tf.while_loop over the grid's N steps."""
  hook = callbacks.step_hook(callback)
  grid = tf.convert_to_tensor(grid, tf.float32)
  num_steps = tf.shape(grid)[0] - 1
  batch = tf.shape(x_init)[0]
  fold_in = tf.random.experimental.stateless_fold_in

  def impose(x, t, step):  # The condition's known coordinates at time t [N], fresh noise.
    return condition.impose(x, sde.mean_coeff(t), sde.std(t),
                            conditions.replacement_noise(seed, step, x))

  def body(i, x, x_mean):
    t = tf.fill([batch], grid[i])
    dt = grid[i] - grid[i + 1]
    step_seed = fold_in(seed, i)
    if condition is None:
      x, x_mean = corrector_fn(score_fn, sde, x, t, dt, fold_in(step_seed, 1), snr, corrector_steps)
    else:  # One move at a time, each followed by the replacement.
      for j in range(corrector_steps):
        x, x_mean = corrector_fn(score_fn, sde, x, t, dt, fold_in(fold_in(step_seed, 1), j), snr, 1)
        x = impose(x, t, i * (corrector_steps + 1) + j)
    x, x_mean = predictor_fn(score_fn, sde, x, t, dt, fold_in(step_seed, 0))
    if condition is not None:
      x = impose(x, tf.fill([batch], grid[i + 1]), i * (corrector_steps + 1) + corrector_steps)
    hook(i + 1, num_steps, x)
    return i + 1, x, x_mean

  if condition is not None:
    x_init = impose(x_init, tf.fill([batch], grid[0]), -1)
  _, x, x_mean = tf.while_loop(lambda i, x, x_mean: i < num_steps, body,
                               (tf.constant(0), x_init, x_init))
  if condition is not None and denoise:  # The mean at eps: no noise on the known part either.
    x_mean = condition.impose(x_mean, sde.mean_coeff(tf.fill([batch], grid[-1])), 0.0,
                              tf.zeros_like(x_mean))
  return x_mean if denoise else x


registry.register(registry.SamplerSpec(
    name='pc', sample=pc_sample, check=check_settings,
    settings={'predictor': 'predictor', 'corrector': 'corrector', 'num_steps': 'sampling_steps',
              'corrector_steps': 'corrector_steps', 'snr': 'snr', 'sampling_eps': 'sampling_eps',
              'denoise': 'denoise'},
    doc='predictor-corrector sampling of the reverse SDE (Song et al. 2021, Algorithms 2-3); '
        'N · (predictor + corrector steps) score evaluations'))
