"""Shape fit: how many objects in a shapes image are a clean disc, square or triangle.

FID needs an Inception network that cannot be downloaded on an offline CPU, and
"the samples look like shapes" is otherwise a matter of eye. For the procedural
`shapes` dataset (ncsn_tf/data/shapes.py) the question has an exact form: every
object in a training image is an axis-aligned disc, square or upright triangle.
So each object in an image is cut out and compared with the best-fitting
template of each kind:

1. the background is the median colour of the border pixels (shapes never
   cover the whole border);
2. the foreground is every pixel whose colour differs from it by more than
   `threshold` in some channel; its 4-connected components are the objects
   (components smaller than `min_pixels` are ignored as specks);
3. each object's fit is the best intersection over union (IoU) with a template
   rasterised by `shapes.signed_distance`, searched over kind, size (around
   the size of equal area, but never outside the data's range of sizes, so a
   blob that covers the image fits nothing) and centre (within 1.5 px of the
   object's centroid).

An object fits when its IoU reaches `iou_threshold` (IOU_THRESHOLD = 0.85: a 10 x
10 px square drawn one pixel too long on one side still fits, at 100/110 = 0.91;
one pixel too big all round, at 100/144 = 0.69, it does not). Training images do
not score 1: overlapping shapes merge into one object that no single template
fits (see `tests/test_shape_fit.py` for the rate of the data itself).
"""

from __future__ import annotations

import numpy as np

from ncsn_tf.data import shapes

KIND_NAMES = ('disc', 'square', 'triangle')
# An object fits from this IoU on (see the module docstring).
IOU_THRESHOLD = 0.85
# Area of each kind at half-size 1 (shapes.signed_distance's `half`): a disc of
# radius 1, a square of half-side 0.8, an equilateral triangle of circumradius 1.
_UNIT_AREA = (np.pi, 1.6**2, 3.0 * np.sqrt(3.0) / 4.0)
# A background is light when its mean colour is above this: the data's light
# backgrounds have every channel >= 0.8, the dark ones <= 0.2.
LIGHT_THRESHOLD = 0.5
# The template search: centre offsets (px) from the centroid on each axis, and
# sizes as factors of the equal-area half-size.
_OFFSETS = np.arange(-1.5, 1.51, 0.5, dtype=np.float32)
_SIZE_FACTORS = np.linspace(0.8, 1.25, 10, dtype=np.float32)
# Template half-sizes stay within the data's range (fractions of the image side),
# widened by the same factors.
_MIN_HALF = shapes.MIN_SIZE_FRACTION * _SIZE_FACTORS[0]
_MAX_HALF = shapes.MAX_SIZE_FRACTION * _SIZE_FACTORS[-1]


def background_colour(image: np.ndarray) -> np.ndarray:
  """The median colour of the border pixels: [H, W, C] -> [C]."""
  border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
  return np.median(border, axis=0)


def components(mask: np.ndarray) -> np.ndarray:
  """4-connected component labels of a boolean [H, W] mask.

  Returns int32 [H, W]: 0 for background, 1..K for the components (numbered in
  raster order of their first pixel). Each foreground pixel repeatedly takes
  the smallest label among itself and its foreground neighbours until nothing
  changes, which takes as many rounds as the longest path inside a component.
  """
  height, width = mask.shape
  big = height * width + 1
  labels = np.where(mask, np.arange(1, big, dtype=np.int64).reshape(height, width), big)
  while True:
    padded = np.pad(labels, 1, constant_values=big)
    neighbours = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                    padded[1:-1, :-2], padded[1:-1, 2:]])
    updated = np.where(mask, neighbours, big)
    if np.array_equal(updated, labels):
      break
    labels = updated
  roots = np.unique(labels[mask])
  out = np.zeros((height, width), np.int32)
  out[mask] = np.searchsorted(roots, labels[mask]) + 1
  return out


def best_template(mask: np.ndarray) -> tuple[float, int]:
  """The best IoU of a boolean object mask [S, S] with any template, and its kind."""
  size = mask.shape[0]
  coords = np.arange(size, dtype=np.float32) + 0.5
  ys, xs = np.nonzero(mask)
  centre_y, centre_x = ys.mean() + 0.5, xs.mean() + 0.5
  offset_y, offset_x, factor = (a.ravel() for a in np.meshgrid(
      _OFFSETS, _OFFSETS, _SIZE_FACTORS, indexing='ij'))
  dy = coords[None, :, None] - (centre_y + offset_y)[:, None, None]
  dx = coords[None, None, :] - (centre_x + offset_x)[:, None, None]
  best_iou, best_kind = 0.0, -1
  for kind, unit_area in enumerate(_UNIT_AREA):
    half = np.clip(np.sqrt(mask.sum() / unit_area) * factor, _MIN_HALF * size, _MAX_HALF * size)
    half = half[:, None, None]
    templates = shapes.signed_distance(kind, dx, dy, half) <= 0.0
    iou = (templates & mask).sum((1, 2)) / (templates | mask).sum((1, 2))
    if iou.max() > best_iou:
      best_iou, best_kind = float(iou.max()), kind
  return best_iou, best_kind


def foreground(image: np.ndarray, threshold: float = 0.2):
  """(background colour [C], boolean foreground mask [H, W]) of one image [H, W, C].

  A pixel is foreground when some channel differs from the background colour
  (`background_colour`) by more than `threshold`.
  """
  image = np.asarray(image, np.float32)
  background = background_colour(image)
  return background, np.abs(image - background).max(-1) > threshold


def _mask_fits(mask: np.ndarray, min_pixels: int) -> list[tuple[float, int]]:
  labels = components(mask)
  fits = []
  for label in range(1, labels.max() + 1):
    component = labels == label
    if component.sum() >= min_pixels:
      fits.append(best_template(component))
  return fits


def object_fits(image: np.ndarray, *, threshold: float = 0.2,
                min_pixels: int = 10) -> list[tuple[float, int]]:
  """(IoU, kind) of the best template for every object of one image [S, S, 3] in [0, 1]."""
  return _mask_fits(foreground(image, threshold)[1], min_pixels)


def shape_fit(images, *, iou_threshold: float = IOU_THRESHOLD, threshold: float = 0.2,
              min_pixels: int = 10) -> dict:
  """Summary of the object fits of images [N, S, S, 3] in [0, 1].

  Returns a dict: 'fit_rate' (share of objects whose IoU >= iou_threshold;
  NaN if there are none), 'fit_rate_stderr' (its standard error, see
  `fit_rate_stderr`), 'median_iou', 'objects' (count), 'empty_images'
  (images without any object), 'fitted_kinds' (the fitted objects per
  kind name), 'foreground_fraction' (the mean share of foreground pixels:
  how much of the images the objects cover) and 'light_backgrounds' (the
  share of images whose background is light, mean colour above
  LIGHT_THRESHOLD: half of the data's; a sampler that weighs the two
  background modes wrongly shows here). The last two are NaN with no images.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f'shape_fit expects square RGB images [N, S, S, 3], got {images.shape}.')
  split = [foreground(image, threshold) for image in images]
  masks = [mask for _, mask in split]
  per_image = [_mask_fits(mask, min_pixels) for mask in masks]
  ious = np.array([iou for fits in per_image for iou, _ in fits])
  kinds = np.array([kind for fits in per_image for _, kind in fits], np.int64)
  objects = np.array([len(fits) for fits in per_image], np.int64)
  # One fit decision per object; per-image counts and kinds are derived from it.
  is_fit = ious >= iou_threshold
  image_of_object = np.repeat(np.arange(len(per_image)), objects)
  fitted_per_image = np.bincount(image_of_object, weights=is_fit, minlength=len(per_image))
  fitted = kinds[is_fit]
  return {
      'fit_rate': float(np.mean(is_fit)) if len(ious) else float('nan'),
      'fit_rate_stderr': fit_rate_stderr(objects, fitted_per_image),
      'median_iou': float(np.median(ious)) if len(ious) else float('nan'),
      'objects': int(len(ious)),
      'empty_images': int(np.sum(objects == 0)),
      'fitted_kinds': {name: int(np.sum(fitted == k)) for k, name in enumerate(KIND_NAMES)},
      'foreground_fraction': _mean([mask.mean() for mask in masks]),
      'light_backgrounds': _mean([colour.mean() > LIGHT_THRESHOLD for colour, _ in split]),
  }


def _mean(values) -> float:
  return float(np.mean(values)) if len(values) else float('nan')


def fit_rate_stderr(objects, fitted) -> float:
  """Standard error of the fit rate Σ fitted / Σ objects over images.

  Objects of one image are not independent draws (one sample's failure tends to
  spoil all of its objects), so the images are the independent units: the
  linearised (delta-method) variance of a ratio of image totals,
  m/(m − 1) · Σ_j (f_j − R·n_j)² / (Σ_j n_j)², for m images with n_j objects of
  which f_j fit and R = Σ f / Σ n. With one object per image it is
  √(R(1 − R)/(m − 1)), the binomial error. NaN with fewer than two images or no
  objects.

  Args:
    objects: float [m], objects per image (n_j >= 0).
    fitted: float [m], fitted objects per image (0 <= f_j <= n_j).
  """
  objects, fitted = np.asarray(objects, np.float64), np.asarray(fitted, np.float64)
  m, total = len(objects), objects.sum()
  if m < 2 or total == 0:
    return float('nan')
  rate = fitted.sum() / total
  return float(np.sqrt(m / (m - 1) * np.sum((fitted - rate * objects)**2)) / total)
