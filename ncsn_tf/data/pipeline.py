"""Datasets: one entry point for toy 2-D data and images.

`dataset_fn(config)` returns the function that
`strategy.distribute_datasets_from_function` calls once per input pipeline;
it yields per-replica batches float32 [batch / replicas, *data_shape(...)]
(with `with_labels=True`, tuples of those and int32 labels [batch / replicas]).
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import catalog
from ncsn_tf import config as config_lib
from ncsn_tf.data import images
from ncsn_tf.data import toy


def num_classes(data: config_lib.DataConfig) -> int:
  """Classes of the dataset's labels (ncsn_tf/catalog.py; 0: unlabelled).

  mnist and cifar10: TFDS's 'label' feature; shapes: the kind of the largest
  visible object (shapes.shapes_split_labels); digits: the digit.
  """
  return catalog.get(data.dataset).num_classes


def data_shape(data: config_lib.DataConfig) -> tuple:
  """The shape of one example: (2,) for toys, (H, W, C) for images."""
  if data.is_toy:
    return (toy.get_toy(data.dataset).dim,)
  return tuple(images.native_shape(data.dataset, data.image_size))


def to_unit_range(x, data: config_lib.DataConfig) -> np.ndarray:
  """Sampler output (data space) -> images float32 in [0, 1] for pictures and metrics.

  Undoes --logit_transform (samples then live in logit space, where clipping to
  [0, 1] alone would show every pixel as black or white), then clips.
  """
  if data.logit_transform:
    x = images.inverse_logit_transform(np.asarray(x, np.float32)).numpy()
  return np.clip(np.asarray(x, np.float32), 0.0, 1.0)


def dataset_fn(config: config_lib.Config, *, split: str = 'train', shuffle: bool = True,
               repeat: bool = True, seed_offset: int = 0, start_batch: int = 0,
               with_labels: bool = False):
  """A function InputContext -> tf.data.Dataset of per-replica batches.

  start_batch: batches each pipeline has already consumed (the global step
    when resuming): toy and in-memory streams continue exactly where they
    stopped; tfds and folder streams restart with a fresh shuffle seeded by it.
  with_labels: batches are (images, int32 labels [B]) tuples; only for datasets
    with num_classes(config.data) > 0 (ValueError otherwise, raised here).
  """
  data = config.data
  seed = config.seed + seed_offset
  if with_labels and not num_classes(data):
    raise ValueError(f'--dataset={data.dataset} has no class labels; labelled datasets: '
                     f'{", ".join(catalog.labelled())}.')

  def make(input_context: tf.distribute.InputContext | None = None):
    per_replica = (input_context.get_per_replica_batch_size(config.train.batch_size)
                   if input_context else config.train.batch_size)
    if data.is_toy:
      # Held-out toy data is simply another stream of fresh samples.
      split_seed = seed if split == 'train' else seed + 7919
      return toy.toy_dataset(toy.get_toy(data.dataset), batch_size=per_replica,
                             seed=split_seed, start_batch=start_batch,
                             input_context=input_context)
    # Images held in memory (shapes, digits) replay cheaply to their exact
    # position. Replaying a tfds or folder stream would decode every skipped
    # batch, so a resumed run there draws a fresh shuffle (seed offset by the
    # position), which is statistically the same stream.
    replay = catalog.get(data.dataset).in_memory
    dataset = images.image_dataset(
        data.dataset, split=split, image_size=data.image_size, batch_size=per_replica,
        data_dir=data.data_dir, data_path=data.data_path,
        random_flip=data.random_flip and split == 'train',
        logit_transform=data.logit_transform, shuffle=shuffle, repeat=repeat,
        seed=seed if replay else seed + start_batch, input_context=input_context,
        with_labels=with_labels)
    return dataset.skip(start_batch) if replay and start_batch else dataset

  return make
