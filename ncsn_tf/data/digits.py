"""Real handwritten digits with no download: the UCI digits bundled in scikit-learn.

`sklearn.datasets.load_digits` reads a file shipped inside the scikit-learn wheel:
1,797 handwritten digits 0-9 (UCI ML "Optical Recognition of Handwritten Digits",
E. Alpaydin and C. Kaynak, 1998; the copy is the UCI test set, written by 13
people). Each image is 8x8; a pixel counts the ink pixels of a 4x4 block of the
original 32x32 binary bitmap, so it takes one of 17 levels 0..16.

This module turns them into an image dataset like the others:

* Split: fixed and stratified. Within each class the examples are permuted
  with numpy's `default_rng(SPLIT_SEED)` and the first floor(n_class / 5) go to
  'test', the rest to 'train': TRAIN_SIZE = 1,442 and TEST_SIZE = 355 images
  (every class has 34-36 test images). Both splits keep the file order. The
  13 writers are not recorded, so the split is not writer-disjoint: a test digit
  usually has training digits from the same hand.
* Levels: v in 0..16 maps to round(v * 255 / 16), so 0 -> 0 and 16 -> 255 (17
  distinct uint8 values at the native size), the 8-bit grid that the image
  pipeline's dequantisation expects.
* Size: upscaled by an integer factor to `image_size` (16 by default; the
  native 8 is allowed) with bilinear interpolation (half-pixel centres, edges
  clamped: `tf.image.resize(method='bilinear')`; its antialias option only
  changes downscaling), computed in float on the 0..255 values and rounded to
  uint8 once. Bilinear because a pixel is the ink coverage of a block, a
  smooth field sampled at the block centres: interpolating it gives smooth
  strokes, where nearest-neighbour copies would make every image constant on
  2x2 blocks, a degenerate set that the score network would have to learn and
  samples would be judged against. At factor 2 each row and column weights its
  neighbours 3/4 and 1/4, which keeps an image's mean exactly.

Loaded arrays are cached per (split, image_size) and returned read-only.
"""

from __future__ import annotations

import functools

import numpy as np

NUM_CLASSES = 10
SPLITS = ('train', 'test')
NATIVE_SIZE = 8
# Grey levels of the source (0..16) and of the uint8 images.
SOURCE_MAX = 16
# Seed of the per-class permutation that picks the test examples; 1 in 5 of
# every class goes to 'test'.
SPLIT_SEED = 0
TEST_FRACTION_DENOMINATOR = 5
TRAIN_SIZE = 1442
TEST_SIZE = 355


def load_digits_split(split: str, image_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """The digits of one split at `image_size`.

  Args:
    split: 'train' (1,442 images) or 'test' (355 images); see the module
      docstring for how they are chosen.
    image_size: side S, a positive multiple of 8 (8 is the native size).

  Returns:
    (images, labels): uint8 [N, S, S, 1] in 0..255 (at S = 8 exactly the 17
    levels round(k * 255 / 16)), and int32 [N] in 0..9. Read-only arrays
    shared between calls (copy before writing).

  Raises:
    ValueError: unknown split or image_size not a positive multiple of 8.
  """
  if split not in SPLITS:
    raise ValueError(f'digits has splits {SPLITS}, got split={split!r}.')
  check_image_size(image_size)
  return _split_at_size(split, int(image_size))


def check_image_size(image_size) -> None:
  """Raises ValueError (one line) unless image_size is a positive multiple of 8."""
  if (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
      or image_size <= 0 or image_size % NATIVE_SIZE):
    raise ValueError(f'digits are upscaled by an integer factor from {NATIVE_SIZE}x{NATIVE_SIZE}: '
                     f'image_size must be a positive multiple of {NATIVE_SIZE}, got {image_size!r}.')


def split_indices(split: str) -> np.ndarray:
  """Sorted indices into `sklearn.datasets.load_digits()` of one split, int64 [N]."""
  if split not in SPLITS:
    raise ValueError(f'digits has splits {SPLITS}, got split={split!r}.')
  return _split_indices()[SPLITS.index(split)]


@functools.lru_cache(maxsize=None)
def _source() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 digits: float64 [1797, 8, 8] in 0..16 and int64 [1797] labels."""
  from sklearn import datasets  # Imported on use: scikit-learn takes a second to import.
  bunch = datasets.load_digits()
  return bunch.images, bunch.target


@functools.lru_cache(maxsize=None)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
  _, labels = _source()
  rng = np.random.default_rng(SPLIT_SEED)
  train, test = [], []
  for digit in range(NUM_CLASSES):
    members = rng.permutation(np.flatnonzero(labels == digit))
    cut = len(members) // TEST_FRACTION_DENOMINATOR
    test.append(members[:cut])
    train.append(members[cut:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=None)
def _split_at_size(split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  source, labels = _source()
  index = split_indices(split)
  pixels = source[index].astype(np.float32)[..., None] * (255.0 / SOURCE_MAX)
  if image_size != NATIVE_SIZE:
    import tensorflow as tf  # Only resizing needs TensorFlow.
    pixels = tf.image.resize(pixels, (image_size, image_size), method='bilinear').numpy()
  images = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
  split_labels = labels[index].astype(np.int32)
  for array in (images, split_labels):
    array.flags.writeable = False  # Shared by every caller through the cache.
  return images, split_labels
