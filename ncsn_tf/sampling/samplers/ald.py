"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) as a registered sampler.

Two ways to run it: on a ladder network at its level indices (`run_model`,
what --sampler=ald does: the paper's chain, seeds and samples), or over the
score of p_t of any SDE whose noise levels hold the ladder (`ald_sample`, the
registry's common contract, for exact scores and continuous-σ models).
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.sampling import langevin
from ncsn_tf.sampling.samplers import registry


def _ladder_times(sde, ladder) -> np.ndarray:
  """t_i = sde.t_of_sigma(σ_i), float32 [L], computed eagerly even inside a tf.function."""
  with tf.init_scope():
    return sde.t_of_sigma(ladder.sigmas).numpy()


def check_ald(sde, *, ladder, n_steps_each, step_lr, denoise):
  """Settings of `ald_sample`: a Ladder inside the SDE's σ range, positive steps."""
  del denoise
  if not isinstance(ladder, noise.Ladder):
    raise ValueError(f'the ald sampler needs a noise.Ladder, got {type(ladder).__name__}')
  if not (isinstance(n_steps_each, (int, np.integer)) and n_steps_each >= 1):
    raise ValueError(f'n_steps_each must be an integer >= 1, got {n_steps_each!r}')
  if not step_lr > 0:
    raise ValueError(f'step_lr must be > 0, got {step_lr}')
  times = _ladder_times(sde, ladder)
  # 1e-4 of slack: a VE SDE built from the ladder maps its ends to 0 and T up to round-off.
  if not (np.all(np.isfinite(times)) and times.min() >= -1e-4 and times.max() <= sde.T * (1 + 1e-4)):
    raise ValueError(f'the ladder ({ladder.sigmas[0]:g} .. {ladder.sigmas[-1]:g}) lies outside '
                     f'the SDE\'s noise levels')


def ald_sample(score_fn, sde, x_init, seed, condition=None, callback=None, *, ladder=None,
               n_steps_each=100, step_lr=2e-5, denoise=False):
  """NCSN's annealed Langevin dynamics (sampling/langevin.py, unchanged) over a time score.

  The chain runs on the ladder in the VE picture y = x/α, y = data + σ noise:
  level i is time t_i = sde.t_of_sigma(σ_i), and its score is
  ∇_y log p_σi(y) = α(t_i) · score_fn(α(t_i) y, t_i) (α = 1 for VE, where this
  is score_fn(y, t_i) exactly). x_init is read as x at t_0 and scaled to y.
  A `condition` (sampling/conditions.py) is imposed in y: known + σ_i z.

  Returns:
    (samples [N, ...], nfe int32 = L·n_steps_each, + 1 with denoise).
  """
  check_ald(sde, ladder=ladder, n_steps_each=n_steps_each, step_lr=step_lr, denoise=denoise)
  times = tf.constant(np.clip(_ladder_times(sde, ladder), 0.0, sde.T))
  alphas = sde.mean_coeff(times)

  def index_score_fn(y, sigma_index):
    alpha = noise.expand_to(tf.gather(alphas, sigma_index), y)
    return alpha * score_fn(alpha * y, tf.gather(times, sigma_index))

  y_init = tf.convert_to_tensor(x_init, tf.float32) / alphas[0]
  samples = langevin.annealed_langevin_dynamics(
      index_score_fn, y_init, ladder.sigmas, condition, n_steps_each=n_steps_each, step_lr=step_lr,
      seed=seed, denoise=denoise, callback=callback)
  return samples, tf.constant(ladder.num_scales * n_steps_each + int(denoise), tf.int32)


def run_model(score_model, sde, x_init, seed, condition=None, num_snapshots: int = 0,
              callback=None, *, n_steps_each: int, step_lr: float, denoise: bool):
  """The paper's chain on a score model's own ladder, asking it at level indices.

  score_model: a ScoreModel (or one that answers like it: `score_index`,
  `sigmas`, `num_scales`); sde is not used (the ladder is the model's).
  Returns (samples [N, ...], trajectory [num_snapshots, N, ...] or None, nfe
  int32 = L·n_steps_each, + 1 with denoise).
  """
  del sde
  sigmas = tf.constant(np.asarray(score_model.sigmas, np.float32))
  out = langevin.annealed_langevin_dynamics(
      score_model.score_index, x_init, sigmas, condition, n_steps_each=n_steps_each,
      step_lr=step_lr, seed=seed, num_snapshots=num_snapshots, denoise=denoise, callback=callback)
  samples, trajectory = out if num_snapshots else (out, None)
  nfe = score_model.num_scales * n_steps_each + int(denoise)
  return samples, trajectory, tf.constant(nfe, tf.int32)


registry.register(registry.SamplerSpec(
    name='ald', sample=ald_sample, check=check_ald,
    settings={'n_steps_each': 'n_steps_each', 'step_lr': 'step_lr', 'denoise': 'denoise'},
    doc='annealed Langevin dynamics on the noise ladder (Song & Ermon 2019, the paper); '
        'from uniform noise; L · n_steps_each score evaluations',
    needs_sde=False, start='uniform', run_model=run_model))
