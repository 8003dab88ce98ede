"""Langevin dynamics and annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

Step convention (the official code's, used by every sampler and flagfile here):

    x ← x + ε_i · s(x, i) + sqrt(2 ε_i) · z,   ε_i = step_lr · (σ_i / σ_L)²,   z ~ N(0, I).

The paper writes the same update as x ← x + (α_i/2) s + sqrt(α_i) z with
α_i = ε · σ_i²/σ_L²; so the paper's ε equals 2 · step_lr here. The image
flagfiles use the released code's step_lr = 2e-5 (which is the paper's
ε = 4e-5, although the paper's text says 2e-5: the code is what made the
published samples). The official toy experiment uses the paper's convention
with ε = 0.1, i.e. step_lr = 0.05 here (`tf_configs/toy_gmm.cfg`).

All loops run inside the graph (`tf.while_loop` under `tf.function`), and the
noise is stateless: step t draws from `seed` folded with t, so a run is a pure
function of (x_init, seed).
"""

import tensorflow as tf

from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions


def _step_noise(seed, t, shape):
  return tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, t))


def langevin_update(x, score, step_size, z):
  """One Langevin move x + ε s + sqrt(2ε) z, all float32 of x's shape (ε scalar > 0).

  Written as x + ε (s + sqrt(2/ε) z) on purpose: the three-term sum inside a
  `tf.while_loop` is merged by grappler's AddOpsRewrite into an AddN that, for
  large batches (CIFAR-10 at batch >= 32), is lowered to a TemporaryVariable
  whose name repeats across calls, and the second call of the compiled sampler
  fails with AlreadyExistsError (tensorflow/tensorflow#37740). Keeping a Mul
  between the two Adds leaves nothing to merge.
  """
  return x + step_size * (score + tf.sqrt(2.0 / step_size) * z)


def snr_step_size(noise_norm, score_norm, snr):
  """The corrector's step ε = 2 (r ‖z‖/‖s‖)² (Song et al. 2021, Algorithm 5), a float32 scalar.

  noise_norm, score_norm: float32 scalars, the batch means of the per-example
  ℓ2 norms of the noise z and of the score s; snr: r > 0. Where the score has
  no norm (an untrained network whose output layer is zero, or every example
  exactly at a mode) the rule's step is infinite and the move x + ε s +
  sqrt(2ε) z would be NaN; with no direction to move in, the move is skipped
  instead: ε = 0 (as whenever the rule's ε overflows float32).
  """
  step = 2.0 * (snr * noise_norm / score_norm)**2
  return tf.where(tf.math.is_finite(step), step, tf.zeros_like(step))


def langevin_step_size(step_lr, sigmas):
  """ε_i = step_lr · (σ_i/σ_L)² for every level: float32 [L]."""
  sigmas = tf.cast(sigmas, tf.float32)
  return step_lr * (sigmas / sigmas[-1])**2


@tf.function(reduce_retracing=True)
def langevin_dynamics(score_fn, x_init, *, step_size, n_steps, seed):
  """Plain (unadjusted) Langevin dynamics with a fixed step.

  Args:
    score_fn: x [N, ...] -> ∇ log p(x) [N, ...].
    x_init: float32 [N, ...] starting points.
    step_size: ε (float), the update is x + ε s(x) + sqrt(2ε) z.
    n_steps: number of steps (python int).
    seed: int32 [2] stateless seed.

  Returns:
    float32 [N, ...], the state after `n_steps`.
  """
  x_init = tf.convert_to_tensor(x_init, tf.float32)
  seed = tf.cast(seed, tf.int32)
  step_size = tf.cast(step_size, tf.float32)

  def body(t, x):
    z = _step_noise(seed, t, tf.shape(x))
    return t + 1, langevin_update(x, score_fn(x), step_size, z)

  _, x = tf.while_loop(lambda t, x: t < n_steps, body, (tf.constant(0), x_init))
  return x


@tf.function(reduce_retracing=True)
def annealed_langevin_dynamics(score_fn, x_init, sigmas, condition=None, *, n_steps_each, step_lr,
                               seed, num_snapshots=0, denoise=False, callback=None):
  """Annealed Langevin dynamics: Algorithm 1 of the paper.

  Args:
    score_fn: (x [N, ...], sigma_index int32 [N]) -> score [N, ...].
    x_init: float32 [N, ...] starting points (the paper: uniform noise).
    sigmas: float32 [L], the ladder, index 0 largest.
    condition: None, or a sampling.conditions.Condition (inpainting,
      colourisation): before every move at level i its known coordinates are
      replaced by the known values + σ_i z, z fresh (Algorithm 2, appendix B.3,
      with fresh noise at every step), and once more at σ_L after the last
      move; with denoise they end at the known values exactly.
    n_steps_each: T, Langevin steps per level (python int).
    step_lr: the base step ε (float); see the module docstring.
    seed: int32 [2] stateless seed.
    num_snapshots: if > 0, also return this many states evenly spaced over the
      run (the last is the final state), for trajectories, strips and GIFs.
    denoise: if True, finish with one noise-free step x + σ_L² s(x, L−1)
      (Tweedie's denoiser; NCSNv2's `denoise`), which removes the σ_L noise.
      The paper's NCSN did not, so it is off by default.
    callback: None, or fn(step, num_steps, x) run on the host after every
      Langevin move (sampling/callbacks.py); step counts from 1 to L·T.

  Returns:
    samples float32 [N, ...]; with num_snapshots > 0, (samples,
    trajectory float32 [num_snapshots, N, ...]).
  """
  x_init = tf.convert_to_tensor(x_init, tf.float32)
  sigmas = tf.cast(sigmas, tf.float32)
  seed = tf.cast(seed, tf.int32)
  condition = conditions.prepare(condition, x_init)
  num_scales = tf.shape(sigmas)[0]
  total_steps = num_scales * n_steps_each
  step_sizes = langevin_step_size(step_lr, sigmas)
  batch = tf.shape(x_init)[0]
  snapshot_every = tf.maximum(total_steps // max(num_snapshots, 1), 1)
  trajectory = tf.TensorArray(tf.float32, size=max(num_snapshots, 1), element_shape=x_init.shape)
  hook = callbacks.step_hook(callback)

  def body(t, x, trajectory):
    level = t // n_steps_each
    sigma_index = tf.fill([batch], level)
    eps = step_sizes[level]
    if condition is not None:
      x = condition.impose(x, 1.0, sigmas[level], conditions.replacement_noise(seed, t, x))
    z = _step_noise(seed, t, tf.shape(x))
    x = langevin_update(x, tf.cast(score_fn(x, sigma_index), tf.float32), eps, z)
    hook(t + 1, total_steps, x)
    if num_snapshots:
      slot = (t + 1) // snapshot_every - 1
      take = tf.logical_and((t + 1) % snapshot_every == 0, slot < num_snapshots)
      trajectory = tf.cond(take, lambda: trajectory.write(slot, x), lambda: trajectory)
    return t + 1, x, trajectory

  _, x, trajectory = tf.while_loop(lambda t, x, tr: t < total_steps, body,
                                   (tf.constant(0), x_init, trajectory))
  if condition is not None:
    x = condition.impose(x, 1.0, sigmas[-1], conditions.replacement_noise(seed, total_steps, x))
  if denoise:
    last = tf.fill([batch], num_scales - 1)
    x = x + sigmas[-1]**2 * tf.cast(score_fn(x, last), tf.float32)
    if condition is not None:  # Noise-free now: the known values themselves.
      x = condition.impose(x, 1.0, 0.0, tf.zeros_like(x))
  if num_snapshots:
    stacked = trajectory.stack()
    # The final state is always the last snapshot (with denoising applied).
    stacked = tf.tensor_scatter_nd_update(stacked, [[num_snapshots - 1]], x[None])
    return x, stacked
  return x
