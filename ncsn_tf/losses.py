"""Score-matching objectives as pure functions of a score function.

A `score_fn(x, sigma_index)` maps perturbed data [N, ...] and noise-level
indices [N] to scores [N, ...]. Losses know no model and no optimizer
(score_sde's `get_smld_loss_fn` convention); randomness comes from a stateless
`seed` (int32 [2]) so a step is a pure function of its inputs.
"""

import tensorflow as tf


def dsm_target(perturbed_x, x, sigma):
  """The denoising score-matching target ∇ log q_σ(x̃ | x) = −(x̃ − x) / σ² (Vincent 2011).

  `sigma` broadcasts against x (scalar or [N, 1, ...]).
  """
  return -(perturbed_x - x) / sigma**2


def _per_example_sum(t):
  return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=-1)


def anneal_dsm_per_example(score_fn, x, sigmas, seed):
  """Annealed DSM, the paper's eqs. (5)-(6), one term per example.

  Each example gets a noise level i ~ U{0..L−1} and the loss
  λ(σ_i) · ½ ‖s_θ(x̃, i) − ∇ log q_σi(x̃|x)‖² with λ(σ) = σ², which makes every
  level's term of order one.

  Args:
    score_fn: (x̃ [N, ...], sigma_index int32 [N]) -> [N, ...].
    x: clean data float32 [N, ...].
    sigmas: float32 [L], the ladder, index 0 largest.
    seed: int32 [2] stateless seed.

  Returns:
    (loss [N] float32, sigma_index [N] int32).
  """
  x = tf.cast(x, tf.float32)
  sigmas = tf.cast(sigmas, tf.float32)
  label_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  batch = tf.shape(x)[0]
  sigma_index = tf.random.stateless_uniform([batch], label_seed, minval=0,
                                            maxval=tf.shape(sigmas)[0], dtype=tf.int32)
  used_sigmas = tf.reshape(tf.gather(sigmas, sigma_index),
                           tf.concat([[batch], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
  perturbed_x = x + used_sigmas * tf.random.stateless_normal(tf.shape(x), noise_seed)
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
