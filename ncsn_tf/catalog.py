"""The datasets: one row of facts per dataset, read by validation, the pipelines and the judges.

TensorFlow-free, so the command line checks `--dataset`, `--image_size`, labels
and splits before TensorFlow loads. Each row says what a dataset is (2-D toy
points or images), its shape, classes and splits, where its examples come
from, and which clean judge measures samples of it. The input pipelines
(ncsn_tf/data/pipeline.py) read the source from the row; nothing else in the
package names a dataset.

Adding a dataset is one `register(DatasetSpec(...))`: for images held in
memory, `load(split, image_size)` returns uint8 images [N, S, S, C] and int
labels [N] (or None), and the package's pipeline does the rest (shuffling,
batching, flips, dequantisation, sharding, exact resume). docs/extending.md
shows one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ncsn_tf.data import digits
from ncsn_tf.data import shapes

#: Where a dataset's examples come from (ncsn_tf/data/pipeline.py reads each kind).
SOURCES = ('toy', 'tfds', 'folder', 'memory')
#: Clean judges of samples (ncsn_tf/evaluation/judges.py).
JUDGES = ('shape_fit', 'digit_judge')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """The facts of one dataset.

  name: the --dataset value.
  source: 'toy' (a 2-D distribution of ncsn_tf/data/toy.py with exact scores),
    'tfds' (tensorflow_datasets `tfds_name`), 'folder' (--data_path) or
    'memory' (arrays from `load`).
  channels: image channels (0 for toys).
  default_size: the image size when --image_size is not given (native size).
  size_multiple, min_size: what --image_size must be (a multiple of, at least).
  num_classes: classes of its labels (0: unlabelled).
  splits: the splits it has ('train', 'test', ...); toys draw fresh examples.
  tfds_name: the tensorflow_datasets name (source 'tfds').
  load: source 'memory': fn(split, image_size) -> (uint8 [N, S, S, C], int labels
    [N] or None), deterministic.
  judge: the clean judge of samples (JUDGES) or None.
  center_crop: side of a centre crop taken before resizing (0: none; CelebA: 140, the
    reference's `transforms.CenterCrop(140)` of the aligned 218x178 faces).
  """
  name: str
  source: str
  channels: int = 0
  default_size: int = 32
  size_multiple: int = 4
  min_size: int = 16
  num_classes: int = 0
  splits: tuple = ('train', 'test')
  tfds_name: str | None = None
  load: Callable | None = None
  judge: str | None = None
  center_crop: int = 0

  @property
  def is_toy(self) -> bool:
    return self.source == 'toy'

  @property
  def in_memory(self) -> bool:
    return self.source == 'memory'

  def check(self) -> 'DatasetSpec':
    """Raises ValueError (one line) if the row does not hold together; returns it."""
    if self.source not in SOURCES:
      raise ValueError(f'dataset {self.name!r}: source must be one of {", ".join(SOURCES)}, '
                       f'got {self.source!r}')
    if self.judge is not None and self.judge not in JUDGES:
      raise ValueError(f'dataset {self.name!r}: judge must be one of {", ".join(JUDGES)} or None')
    if self.source == 'memory' and not callable(self.load):
      raise ValueError(f'dataset {self.name!r}: a memory source needs load(split, image_size)')
    if self.source == 'tfds' and not self.tfds_name:
      raise ValueError(f'dataset {self.name!r}: a tfds source needs tfds_name')
    if not self.is_toy and self.channels not in (1, 3):
      raise ValueError(f'dataset {self.name!r}: images have 1 or 3 channels, got {self.channels}')
    return self


def _toy(name: str) -> DatasetSpec:
  return DatasetSpec(name, 'toy', splits=())


def _shapes_split(split: str, image_size: int):
  return (shapes.shapes_split_images(split, image_size=image_size),
          shapes.shapes_split_labels(split, image_size=image_size))


_BUILTIN = (
    # The 2-D toys of the paper and the lab, with exact scores (ncsn_tf/data/toy.py).
    _toy('gmm'), _toy('banana'), _toy('rings'), _toy('grid'), _toy('gmm8'),
    # tensorflow_datasets (prepared once by the user; nothing is downloaded during a run).
    DatasetSpec('mnist', 'tfds', channels=1, default_size=28, num_classes=10,
                tfds_name='mnist'),
    DatasetSpec('cifar10', 'tfds', channels=3, num_classes=10, tfds_name='cifar10'),
    DatasetSpec('celeba', 'tfds', channels=3, tfds_name='celeb_a',
                splits=('train', 'validation', 'test'), center_crop=140),
    DatasetSpec('folder', 'folder', channels=3),
    # Offline: procedural shapes (labelled by the largest visible object) and the
    # scikit-learn digits (upscaled from 8x8, so sizes are multiples of 8).
    DatasetSpec('shapes', 'memory', channels=3, num_classes=shapes.NUM_KINDS,
                load=_shapes_split, judge='shape_fit'),
    DatasetSpec('digits', 'memory', channels=1, default_size=16, size_multiple=digits.NATIVE_SIZE,
                min_size=digits.NATIVE_SIZE, num_classes=digits.NUM_CLASSES,
                load=digits.load_digits_split, judge='digit_judge'),
)

_DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds a dataset (its --dataset name must be new); returns the checked row."""
  if spec.name in _DATASETS:
    raise ValueError(f'dataset {spec.name!r} is already registered')
  _DATASETS[spec.name] = spec.check()
  return spec


for _spec in _BUILTIN:
  register(_spec)


def names() -> tuple:
  """Every --dataset value, toys first, in registration order."""
  return tuple(_DATASETS)


def toy_names() -> tuple:
  return tuple(name for name, spec in _DATASETS.items() if spec.is_toy)


def image_names() -> tuple:
  return tuple(name for name, spec in _DATASETS.items() if not spec.is_toy)


def get(name: str) -> DatasetSpec:
  """The row of `name`; ValueError naming the registered datasets otherwise."""
  if name not in _DATASETS:
    raise ValueError(f'unknown dataset {name!r}; registered: {", ".join(_DATASETS)}')
  return _DATASETS[name]


def labelled() -> dict:
  """{name: classes} of the datasets with labels."""
  return {name: spec.num_classes for name, spec in _DATASETS.items() if spec.num_classes}
