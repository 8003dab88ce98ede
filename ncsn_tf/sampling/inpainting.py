"""Inpainting with annealed Langevin dynamics (Song & Ermon 2019, appendix B.3).

At every step of level i the known pixels are replaced by the original image
perturbed with fresh N(0, σ_i²) noise, so the unknown pixels are sampled from
p_σi(x_unknown | x_known + σ_i z) while σ anneals; the known pixels therefore
end at the original values up to σ_L noise. Masks are 1 where pixels are known.
"""

import numpy as np
import tensorflow as tf

from ncsn_tf.sampling.langevin import langevin_step_size, langevin_update

MASK_KINDS = ('right', 'left', 'top', 'bottom', 'center', 'random')


def make_mask(kind: str, shape, *, seed: int = 0, keep_fraction: float = 0.25) -> np.ndarray:
  """A float32 mask [N, H, W, C] with 1 = known.

  kind: 'right' (the right half is missing, as in the paper), 'left', 'top',
    'bottom', 'center' (a centred box of half the size is missing), or
    'random' (each pixel known with probability `keep_fraction`, shared
    across channels).
  """
  n, h, w, c = shape
  mask = np.ones((n, h, w, c), np.float32)
  if kind == 'right':
    mask[:, :, w // 2:] = 0
  elif kind == 'left':
    mask[:, :, :w // 2] = 0
  elif kind == 'top':
    mask[:, :h // 2] = 0
  elif kind == 'bottom':
    mask[:, h // 2:] = 0
  elif kind == 'center':
    mask[:, h // 4:h - h // 4, w // 4:w - w // 4] = 0
  elif kind == 'random':
    keep = np.random.default_rng(seed).random((n, h, w, 1)) < keep_fraction
    mask = np.broadcast_to(keep, (n, h, w, c)).astype(np.float32)
  else:
    raise ValueError(f'unknown mask {kind!r}; choose from {", ".join(MASK_KINDS)} or a mask image')
  return mask


def mask_from_image(path: str, shape) -> np.ndarray:
  """A mask [N, H, W, C] from an image file: bright (>= 128) pixels are known."""
  from PIL import Image
  n, h, w, c = shape
  gray = np.asarray(Image.open(path).convert('L').resize((w, h), Image.NEAREST))
  known = (gray >= 128).astype(np.float32)[None, :, :, None]
  return np.broadcast_to(known, (n, h, w, c)).copy()


@tf.function(reduce_retracing=True)
def annealed_langevin_inpainting(score_fn, images, mask, sigmas, *, n_steps_each, step_lr, seed):
  """Fills the unknown pixels of `images`.

  Args:
    score_fn: (x [N, H, W, C], sigma_index int32 [N]) -> score.
    images: float32 [N, H, W, C], the originals (unknown pixels are ignored).
    mask: float32 [N, H, W, C], 1 = known.
    sigmas: float32 [L], index 0 largest.
    n_steps_each, step_lr: as in `annealed_langevin_dynamics`.
    seed: int32 [2] stateless seed.

  Returns:
    float32 [N, H, W, C]: known pixels = original + σ_L noise, the rest sampled.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  mask = tf.convert_to_tensor(mask, tf.float32)
  sigmas = tf.cast(sigmas, tf.float32)
  seed = tf.cast(seed, tf.int32)
  num_scales = tf.shape(sigmas)[0]
  step_sizes = langevin_step_size(step_lr, sigmas)
  batch = tf.shape(images)[0]
  init_seed, chain_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  x = tf.random.stateless_uniform(tf.shape(images), init_seed)

  def known(level, t):
    noise_seed = tf.random.experimental.stateless_fold_in(chain_seed, 2 * t)
    return images + sigmas[level] * tf.random.stateless_normal(tf.shape(images), noise_seed)

  def body(t, x):
    level = t // n_steps_each
    x = x * (1.0 - mask) + known(level, t) * mask
    eps = step_sizes[level]
    z = tf.random.stateless_normal(tf.shape(x), tf.random.experimental.stateless_fold_in(
        chain_seed, 2 * t + 1))
    x = langevin_update(x, tf.cast(score_fn(x, tf.fill([batch], level)), tf.float32), eps, z)
    return t + 1, x

  total = num_scales * n_steps_each
  _, x = tf.while_loop(lambda t, x: t < total, body, (tf.constant(0), x))
  return x * (1.0 - mask) + known(num_scales - 1, total) * mask
