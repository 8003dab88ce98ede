"""Tests for ncsn_tf.data.shapes, the offline procedural image dataset."""

import time

import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf.data import images
from ncsn_tf.data import shapes


def test_shape_dtype_and_range():
  x = shapes.shapes_images(64, image_size=32, seed=0)
  assert x.shape == (64, 32, 32, 3) and x.dtype == np.uint8
  # Both light and dark backgrounds, and saturated shape colours, use the range.
  assert x.min() <= 10 and x.max() >= 245
  # Every image holds at least one shape: no image is a single flat colour.
  assert np.all(x.reshape(64, -1, 3).std(axis=1).max(axis=1) > 5)


def test_same_seed_identical_other_seed_different():
  first = shapes.shapes_images(300, image_size=32, seed=7)
  np.testing.assert_array_equal(first, shapes.shapes_images(300, 32, seed=7))
  assert not np.array_equal(first, shapes.shapes_images(300, 32, seed=8))


def test_blocking_does_not_change_images(monkeypatch):
  reference = shapes.shapes_images(50, 32, seed=3)
  monkeypatch.setattr(shapes, '_BLOCK', 7)
  np.testing.assert_array_equal(shapes.shapes_images(50, 32, seed=3), reference)


def test_image_size_is_configurable():
  x = shapes.shapes_images(4, image_size=48, seed=1)
  assert x.shape == (4, 48, 48, 3)


def test_hard_edges_have_only_flat_colours_antialias_adds_ramps():
  hard = shapes.shapes_images(32, 32, seed=2, antialias=False)
  soft = shapes.shapes_images(32, 32, seed=2, antialias=True)
  for image in hard:
    # Background plus at most three shape colours.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) <= 1 + shapes.MAX_SHAPES
  colours_soft = [len(np.unique(im.reshape(-1, 3), axis=0)) for im in soft]
  assert np.mean(colours_soft) > 1 + shapes.MAX_SHAPES
  # Same scenes: the images differ only along shape edges.
  assert np.mean(np.any(hard != soft, axis=-1)) < 0.25


def test_generation_is_fast():
  start = time.perf_counter()
  shapes.shapes_images(10_000, 32, seed=0)
  # About 1.5 s on one core of the build machine; generous for shared CPUs.
  assert time.perf_counter() - start < 20.0


def test_splits_are_fixed_and_different():
  train = shapes.shapes_split_images('train', num_images=100)
  np.testing.assert_array_equal(
      train, shapes.shapes_split_images('train', num_images=100))
  test = shapes.shapes_split_images('test', num_images=100)
  assert not np.array_equal(train, test)
  with pytest.raises(ValueError, match='splits'):
    shapes.shapes_split_images('validation', num_images=4)


def _shapes_dataset(**kwargs):
  return images.image_dataset('shapes', image_size=kwargs.pop('image_size', None), **kwargs)


def test_the_shapes_pipeline_yields_the_split_images(monkeypatch):
  # Small split sizes keep the test fast; the pipeline reads them at call time.
  monkeypatch.setattr(shapes, 'TRAIN_SIZE', 40)
  monkeypatch.setattr(shapes, 'TEST_SIZE', 12)
  dataset = _shapes_dataset(batch_size=8, repeat=False)
  batches = [batch.numpy() for batch in dataset]
  assert len(batches) == 5
  for batch in batches:
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() < 1.0
  clean = np.concatenate(list(_shapes_dataset(
      split='test', batch_size=4, repeat=False, shuffle=False,
      random_flip=False, dequantize=False).as_numpy_iterator()))
  np.testing.assert_allclose(
      clean * 255.0, shapes.shapes_split_images('test').astype(np.float32),
      atol=1e-3)


def test_shapes_shards_are_disjoint(monkeypatch):
  monkeypatch.setattr(shapes, 'TRAIN_SIZE', 20)

  def shard(pipeline_id):
    context = tf.distribute.InputContext(2, pipeline_id, 2)
    return np.concatenate(list(_shapes_dataset(
        batch_size=1, repeat=False, random_flip=False, dequantize=False,
        input_context=context).as_numpy_iterator()))

  first, second = shard(0), shard(1)
  assert len(first) == len(second) == 10
  assert not {a.tobytes() for a in first} & {b.tobytes() for b in second}


def test_a_resumed_shapes_stream_replays_to_the_exact_batch(monkeypatch):
  # The trainer resumes the shapes stream at the global step (data.dataset_fn's
  # start_batch): it must yield exactly the batches an uninterrupted run would
  # have seen next, flips and dequantisation noise included, also across an
  # epoch boundary (10 batches of 4 per epoch here; resume at batch 8).
  from ncsn_tf import config as config_lib
  from ncsn_tf.data import pipeline as data_lib
  monkeypatch.setattr(shapes, 'TRAIN_SIZE', 40)
  config = config_lib.Config(name='replay', seed=5).replace(
      data={'dataset': 'shapes', 'image_size': 16}, train={'batch_size': 4})
  full = list(data_lib.dataset_fn(config)().take(13).as_numpy_iterator())
  resumed = list(data_lib.dataset_fn(config, start_batch=8)().take(5).as_numpy_iterator())
  for expected, got in zip(full[8:], resumed):
    np.testing.assert_array_equal(expected, got)
  assert len(resumed) == 5
