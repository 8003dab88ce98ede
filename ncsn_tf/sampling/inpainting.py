"""Inpainting masks: which pixels are known (1) and which are to be generated (0).

The sampling itself is a condition that every sampler accepts
(`conditions.inpainting(images, mask)`, sampling/conditions.py): the known
pixels are replaced by the original perturbed to the current noise level
(Song & Ermon 2019, appendix B.3; Song et al. 2021, appendix I.2).
"""

import numpy as np

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
