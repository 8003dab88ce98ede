"""Offline procedural images: coloured discs, squares and triangles.

`shapes` is the image dataset that works with no download at all. Each image has a
plain background (a random light or dark colour) and one to three filled shapes of
random kind, size, position and colour. The images are deliberately simple and clean
(flat colours, few objects, no texture) so that a small score network learns them in
minutes on a CPU, while still being multi-modal enough (kind, count, colour, position)
for annealed Langevin samples to be judged by eye. Each image's class label
(`shapes_split_labels`) is the kind of its largest visible object.

Generation is vectorised numpy: every shape is rasterised from a signed distance
function evaluated on the pixel grid for a whole block of images at once, so 10,000
32x32 images take well under a second per core. The same seed always gives
bit-identical images.
"""

from __future__ import annotations

import numpy as np

# Default dataset sizes (fixed, like a real dataset). The test split uses a different
# generator stream, so train and test images are independent draws.
TRAIN_SIZE = 20_000
TEST_SIZE = 2_000
SPLITS = ('train', 'test')

MAX_SHAPES = 3
# Shape kinds, indices into the `kind` array.
DISC, SQUARE, TRIANGLE = 0, 1, 2
NUM_KINDS = 3

# Shape half-size (disc radius / square half-side / triangle circumradius) as a
# fraction of the image side: big enough to be several pixels wide at 32x32, small
# enough that up to three fit.
MIN_SIZE_FRACTION = 0.12
MAX_SIZE_FRACTION = 0.26
# Background channel values: light in [LIGHT_MIN, 1], dark in [0, DARK_MAX].
LIGHT_MIN = 0.8
DARK_MAX = 0.2
# Shape colours: fully random hue, strong saturation and value so that shapes stand
# out from both light and dark backgrounds.
MIN_SATURATION = 0.6
MIN_VALUE = 0.55
# Images rasterised per block; bounds peak memory at about
# BLOCK * H * W * 4 bytes * (a few temporaries).
_BLOCK = 2048
# Seed-sequence tags that separate the train and test streams.
_SPLIT_TAGS = {'train': 0, 'test': 1}


def shapes_images(num_images: int, image_size: int = 32, seed: int = 0, *,
                  antialias: bool = True) -> np.ndarray:
  """Generates `num_images` procedural RGB images.

  Args:
    num_images: number of images N (>= 0).
    image_size: side length S in pixels (>= 8).
    seed: integer seed; the same (num_images, image_size, seed, antialias) always
      gives identical images.
    antialias: if True, shape edges get a one-pixel linear coverage ramp; if False,
      edges are hard (every pixel is background or exactly one shape colour).

  Returns:
    uint8 array [N, S, S, 3] with values in [0, 255].
  """
  if num_images < 0:
    raise ValueError(f'num_images must be >= 0, got {num_images}.')
  if image_size < 8:
    raise ValueError(f'image_size must be >= 8, got {image_size}.')
  params = _draw_parameters(np.random.default_rng(seed), num_images, image_size)
  out = np.empty((num_images, image_size, image_size, 3), np.uint8)
  for start in range(0, num_images, _BLOCK):
    block = slice(start, min(start + _BLOCK, num_images))
    block_params = {key: value[block] for key, value in params.items()}
    out[block] = _rasterise(block_params, image_size, antialias)
  return out


def shapes_split_images(split: str = 'train', *, image_size: int = 32,
                        num_images: int | None = None, data_seed: int = 0,
                        antialias: bool = True) -> np.ndarray:
  """The fixed images of one split: uint8 [N, S, S, 3].

  'train' has TRAIN_SIZE and 'test' TEST_SIZE images by default; the two splits are
  drawn from different seed streams derived from `data_seed`.
  """
  num_images, seed = _split_stream(split, num_images, data_seed)
  return shapes_images(num_images, image_size, seed, antialias=antialias)


def shapes_split_labels(split: str = 'train', *, image_size: int = 32,
                        num_images: int | None = None, data_seed: int = 0,
                        antialias: bool = True) -> np.ndarray:
  """The class of each image of `shapes_split_images` (same arguments): int32 [N].

  The label is the kind (DISC, SQUARE or TRIANGLE; NUM_KINDS classes) of the
  image's largest object by VISIBLE area: the object's pixel coverage (the
  same anti-aliased coverage that paints it) times what later objects leave
  uncovered, summed over the image. Occlusion counts because a classifier sees
  only the visible part. Drawn from the same parameters as the images, so
  label k belongs to image k of `shapes_split_images` with these arguments.
  """
  num_images, seed = _split_stream(split, num_images, data_seed)
  return shapes_labels(num_images, image_size, seed, antialias=antialias)


def shapes_labels(num_images: int, image_size: int = 32, seed: int = 0, *,
                  antialias: bool = True) -> np.ndarray:
  """Kind of the largest visible object of each `shapes_images` image: int32 [N]."""
  if num_images < 0:
    raise ValueError(f'num_images must be >= 0, got {num_images}.')
  if image_size < 8:
    raise ValueError(f'image_size must be >= 8, got {image_size}.')
  params = _draw_parameters(np.random.default_rng(seed), num_images, image_size)
  out = np.empty(num_images, np.int32)
  for start in range(0, num_images, _BLOCK):
    block = slice(start, min(start + _BLOCK, num_images))
    block_params = {key: value[block] for key, value in params.items()}
    coverage = _coverage(block_params, image_size, antialias)  # [n, slot, S, S]
    # What later slots (painted on top) leave of each slot: prod_{j > i} (1 - c_j).
    uncovered = np.ones_like(coverage)
    for slot in range(MAX_SHAPES - 2, -1, -1):
      uncovered[:, slot] = uncovered[:, slot + 1] * (1.0 - coverage[:, slot + 1])
    visible = (coverage * uncovered).sum(axis=(2, 3))  # [n, slot]; inactive slots 0.
    largest = np.argmax(visible, axis=1)
    out[block] = np.take_along_axis(block_params['kind'], largest[:, None], axis=1)[:, 0]
  return out


def _split_stream(split: str, num_images: int | None, data_seed: int) -> tuple[int, int]:
  """(image count, generator seed) of a split of the fixed dataset."""
  if split not in _SPLIT_TAGS:
    raise ValueError(f"shapes has splits {SPLITS}, got split={split!r}.")
  if num_images is None:
    num_images = TRAIN_SIZE if split == 'train' else TEST_SIZE
  # SeedSequence mixes (data_seed, split) into independent streams, so the test split
  # never repeats training images for any data_seed.
  split_seed = np.random.SeedSequence([data_seed, _SPLIT_TAGS[split]])
  return num_images, int(split_seed.generate_state(1)[0])




def _draw_parameters(rng: np.random.Generator, n: int, size: int) -> dict:
  """All random parameters for n images, drawn up front so blocking is invisible."""
  light = rng.random(n) < 0.5
  background = np.where(
      light[:, None],
      rng.uniform(LIGHT_MIN, 1.0, (n, 3)),
      rng.uniform(0.0, DARK_MAX, (n, 3)))
  num_shapes = rng.integers(1, MAX_SHAPES + 1, n)
  kind = rng.integers(0, NUM_KINDS, (n, MAX_SHAPES))
  half = rng.uniform(MIN_SIZE_FRACTION, MAX_SIZE_FRACTION, (n, MAX_SHAPES)) * size
  # Centres keep the whole shape inside the image (all kinds fit in a disc of
  # radius `half`); pixel centres sit at 0.5, 1.5, ... in this frame.
  centre = half[..., None] + rng.random((n, MAX_SHAPES, 2)) * (
      size - 2.0 * half[..., None])
  colour = _hsv_to_rgb(rng.random((n, MAX_SHAPES)),
                       rng.uniform(MIN_SATURATION, 1.0, (n, MAX_SHAPES)),
                       rng.uniform(MIN_VALUE, 1.0, (n, MAX_SHAPES)))
  active = np.arange(MAX_SHAPES)[None, :] < num_shapes[:, None]
  # float32 from here on: rasterisation cost is dominated by [n, S, S] temporaries.
  as32 = lambda a: a.astype(np.float32)
  return dict(background=as32(background), kind=kind, half=as32(half),
              centre=as32(centre), colour=as32(colour), active=active)


def _rasterise(params: dict, size: int, antialias: bool) -> np.ndarray:
  """Paints one block of images; returns uint8 [n, size, size, 3]."""
  coverage = _coverage(params, size, antialias)
  n = params['kind'].shape[0]
  image = np.broadcast_to(params['background'][:, None, None, :],
                          (n, size, size, 3)).copy()
  for slot in range(MAX_SHAPES):  # Later slots paint over earlier ones.
    alpha = coverage[:, slot, :, :, None]
    colour = params['colour'][:, slot, None, None, :]
    image = image * (1.0 - alpha) + colour * alpha
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _coverage(params: dict, size: int, antialias: bool) -> np.ndarray:
  """Each slot's pixel coverage in [0, 1], float32 [n, MAX_SHAPES, size, size].

  Inactive slots cover nothing.
  """
  coords = np.arange(size, dtype=np.float32) + 0.5
  n = params['kind'].shape[0]
  out = np.empty((n, MAX_SHAPES, size, size), np.float32)
  for slot in range(MAX_SHAPES):
    # Offsets of every pixel from this slot's shape centre: [n, size(y), size(x)].
    dy = coords[None, :, None] - params['centre'][:, slot, 0, None, None]
    dx = coords[None, None, :] - params['centre'][:, slot, 1, None, None]
    half = params['half'][:, slot, None, None]
    distance = signed_distance(params['kind'][:, slot, None, None], dx, dy, half)
    if antialias:
      # A one-pixel ramp across the edge approximates the pixel's area coverage.
      coverage = np.clip(0.5 - distance, 0.0, 1.0)
    else:
      coverage = (distance <= 0.0).astype(np.float32)
    out[:, slot] = coverage * params['active'][:, slot, None, None]
  return out


def signed_distance(kind, dx, dy, half):
  """Signed distance (pixels, negative inside) to a disc, square or triangle.

  Args (numpy, broadcast together): kind (DISC, SQUARE or TRIANGLE), dx and dy
  (pixel offsets from the shape centre, y down), half (the shape's half-size:
  disc radius, square half-side / 0.8, triangle circumradius).

  The square and triangle use the max-of-half-planes form, exact inside and within a
  pixel of the boundary, which is all the anti-aliasing ramp needs.
  """
  disc = np.sqrt(dx * dx + dy * dy) - half
  square = np.maximum(np.abs(dx), np.abs(dy)) - half * _SQUARE_SCALE
  # Upright equilateral triangle with circumradius `half` (inradius half / 2);
  # image y grows downwards, so the base's outward normal is +y.
  triangle = np.maximum.reduce([
      dx * nx + dy * ny for nx, ny in _TRIANGLE_NORMALS]) - half * 0.5
  # The triangle's centroid sits at the shape centre, so it lies inside the disc of
  # radius `half` and therefore inside the image.
  return np.where(kind == DISC, disc, np.where(kind == SQUARE, square, triangle))


# A square of half-side 0.8 * half has about the visual area of the disc and the
# triangle of the same `half`, and fits inside the disc of radius `half`.
_SQUARE_SCALE = 0.8
_TRIANGLE_NORMALS = tuple(
    (np.float32(nx), np.float32(ny))
    for nx, ny in ((0.0, 1.0), (np.sqrt(3.0) / 2.0, -0.5),
                   (-np.sqrt(3.0) / 2.0, -0.5)))


def _hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB; inputs in [0, 1] of any equal shape, output [..., 3]."""
  i = np.floor(h * 6.0).astype(np.int64) % 6
  f = h * 6.0 - np.floor(h * 6.0)
  p = v * (1.0 - s)
  q = v * (1.0 - f * s)
  t = v * (1.0 - (1.0 - f) * s)
  choices = [
      np.stack(c, axis=-1) for c in
      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
  return np.select([(i == k)[..., None] for k in range(6)], choices)
