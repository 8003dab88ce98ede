"""Tests for ncsn_tf.data.images.

TFDS datasets are exercised through `tfds.testing.mock_data`, which makes TFDS
return random examples with the real feature specs (CelebA: 218x178x3 uint8) and
no download; image folders are generated in tmp_path with Pillow.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from ncsn_tf import catalog
from ncsn_tf.data import images

TFDS_CASES = [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3)),
              ('celeba', (32, 32, 3))]
NUM_MOCK = 24


def _collect(dataset) -> np.ndarray:
  """All batches of a finite dataset, concatenated: [N, H, W, C]."""
  return np.concatenate([batch.numpy() for batch in dataset], axis=0)


def _clean_and(name, num_examples=NUM_MOCK, **kwargs):
  """(clean, other) one-pass arrays of the same examples in the same order.

  `clean` has no flip and no noise; `other` uses `kwargs`.
  """
  common = dict(image_size=None, batch_size=4, shuffle=False, repeat=False,
                seed=3)
  with tfds.testing.mock_data(num_examples=num_examples):
    clean = _collect(images.image_dataset(
        name, random_flip=False, dequantize=False, **common))
    other = _collect(images.image_dataset(name, **{**common, **kwargs}))
  return clean, other


@pytest.mark.parametrize('name, shape', TFDS_CASES)
def test_tfds_batches_have_shape_dtype_and_range(name, shape):
  with tfds.testing.mock_data(num_examples=NUM_MOCK):
    dataset = images.image_dataset(name, image_size=None, batch_size=5)
    batches = [batch.numpy() for batch in dataset.take(7)]  # repeats past 24
  assert images.native_shape(name, None) == shape
  for batch in batches:
    assert batch.shape == (5,) + shape
    assert batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() < 1.0


@pytest.mark.parametrize('name, channels', [('mnist', 1), ('celeba', 3)])
def test_image_size_resizes(name, channels):
  with tfds.testing.mock_data(num_examples=4):
    batch = next(iter(images.image_dataset(name, image_size=64, batch_size=2)))
  assert batch.shape == (2, 64, 64, channels)
  assert images.native_shape(name, 64) == (64, 64, channels)


def test_batch_size_is_per_pipeline_and_drops_remainder():
  with tfds.testing.mock_data(num_examples=10):
    dataset = images.image_dataset('mnist', image_size=None, batch_size=4,
                                   repeat=False)
    sizes = [batch.shape[0] for batch in dataset]
  assert sizes == [4, 4]


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'celeba'])
def test_dequantization_noise_is_uniform_within_one_bin(name):
  clean, noisy = _clean_and(name, random_flip=False, dequantize=True)
  levels = clean * 255.0
  # Clean data lie on the k/255 grid (float32 rounding only).
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
  # noisy = k/256 + u/256: recover u and check it is U[0, 1).
  u = noisy * 256.0 - np.round(levels)
  assert u.min() >= -1e-3 and u.max() < 1.0 + 1e-3
  assert abs(u.mean() - 0.5) < 0.02
  assert abs(u.std() - np.sqrt(1.0 / 12.0)) < 0.02
  # Within one 1/256 bin of the clean value, and off the k/255 grid.
  assert np.abs(noisy - clean).max() <= 1.0 / 256.0 + 1e-6
  noisy_levels = noisy * 255.0
  on_grid = np.abs(noisy_levels - np.round(noisy_levels)) < 1e-3
  assert on_grid.mean() < 0.01


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'celeba'])
def test_random_flip_flips_about_half_only_when_enabled(name):
  clean, flipped = _clean_and(name, num_examples=64, random_flip=True,
                              dequantize=False)
  mirrored = clean[:, :, ::-1, :]
  is_same = np.all(flipped == clean, axis=(1, 2, 3))
  is_mirror = np.all(flipped == mirrored, axis=(1, 2, 3))
  assert np.all(is_same | is_mirror)
  # Random mock images are never mirror-symmetric, so the two cases are exclusive.
  assert not np.any(is_same & is_mirror)
  assert 16 <= is_mirror.sum() <= 48  # Binomial(64, 1/2): mean 32, sd 4.
  _, unflipped = _clean_and(name, num_examples=64, random_flip=False,
                            dequantize=False)
  np.testing.assert_array_equal(unflipped, clean)


def test_celeba_is_centre_cropped_to_140():
  """At image_size=140 there is no resize: the output is exactly the crop."""
  with tfds.testing.mock_data(num_examples=4):
    raw = np.stack([ex['image'] for ex in tfds.as_numpy(
        tfds.load('celeb_a', split='train'))])
    out = _collect(images.image_dataset(
        'celeba', image_size=140, batch_size=4, shuffle=False, repeat=False,
        random_flip=False, dequantize=False))
  assert raw.shape[1:] == (218, 178, 3)
  # torchvision CenterCrop offsets: round((218-140)/2) = 39, round((178-140)/2) = 19.
  expected = raw[:, 39:179, 19:159, :].astype(np.float32) / 255.0
  np.testing.assert_allclose(out, expected, atol=1e-6)


def test_same_seed_same_batches_and_other_seed_differs():
  def first_batches(seed):
    with tfds.testing.mock_data(num_examples=NUM_MOCK):
      dataset = images.image_dataset('cifar10', image_size=None, batch_size=4,
                                     seed=seed)
      return np.stack([b.numpy() for b in dataset.take(3)])

  np.testing.assert_array_equal(first_batches(1), first_batches(1))
  assert not np.array_equal(first_batches(1), first_batches(2))


def test_logit_transform_round_trip():
  x = tf.constant(np.linspace(0.0, 1.0, 1001), tf.float32)
  y = images.logit_transform(x)
  assert np.all(np.isfinite(y.numpy()))
  # logit(1e-6) = -13.8155...: the range the score network sees.
  np.testing.assert_allclose(y.numpy()[[0, -1]], [-13.8155, 13.8155], atol=1e-2)
  np.testing.assert_allclose(images.inverse_logit_transform(y).numpy(),
                             x.numpy(), atol=1e-5)
  np.testing.assert_allclose(
      y.numpy()[500], 0.0, atol=1e-6)  # logit(1/2) = 0


def test_pipeline_logit_transform_matches_function():
  common = dict(image_size=None, batch_size=4, shuffle=False, repeat=False,
                seed=5)
  with tfds.testing.mock_data(num_examples=8):
    unit = _collect(images.image_dataset('mnist', **common))
    logit = _collect(images.image_dataset('mnist', logit_transform=True,
                                          **common))
  np.testing.assert_allclose(logit, images.logit_transform(unit).numpy(),
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(images.inverse_logit_transform(logit).numpy(),
                             unit, atol=1e-5)


def test_dequantize_helper_bounds():
  x = tf.constant(np.arange(256, dtype=np.float32) / 255.0)
  y = images.dequantize(x, seed=tf.constant([1, 2])).numpy()
  k = np.arange(256)
  assert np.all(y >= k / 256.0) and np.all(y < (k + 1) / 256.0)


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_input_context_gives_disjoint_shards(name):
  def shard(pipeline_id):
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id,
        num_replicas_in_sync=2)
    with tfds.testing.mock_data(num_examples=10):
      return _collect(images.image_dataset(
          name, image_size=None, batch_size=1, repeat=False, shuffle=True,
          random_flip=False, dequantize=False, input_context=context))

  def keys(arr):
    return {example.tobytes() for example in arr}

  with tfds.testing.mock_data(num_examples=10):
    everything = _collect(images.image_dataset(
        name, image_size=None, batch_size=1, repeat=False, shuffle=False,
        random_flip=False, dequantize=False))
  first, second = shard(0), shard(1)
  assert len(first) == len(second) == 5
  assert not keys(first) & keys(second)
  assert keys(first) | keys(second) == keys(everything)


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'celeba'])
def test_unprepared_tfds_dataset_raises_with_three_ways(name, tmp_path):
  with pytest.raises(images.DatasetUnavailableError) as info:
    images.image_dataset(name, image_size=None, batch_size=2,
                         data_dir=str(tmp_path))
  message = str(info.value)
  assert '\n' not in message
  tfds_name = catalog.get(name).tfds_name
  assert f"'{name}'" in message and tfds_name in message
  assert f'tfds build {tfds_name}' in message          # (1)
  assert 'manual_dir' in message                        # (2)
  assert '--dataset=folder --data_path=DIR' in message  # (3)
  assert str(tmp_path) in message
  # Nothing was downloaded or prepared.
  assert not any(tmp_path.rglob('*'))


def _write_folder(root):
  """A folder tree of odd-sized PNG/JPEG images in RGB, grayscale and RGBA."""
  rng = np.random.default_rng(0)
  (root / 'nested' / 'deeper').mkdir(parents=True)
  specs = [  # (relative path, mode, width, height)
      ('a.png', 'RGB', 37, 23), ('b.jpg', 'L', 50, 61),
      ('nested/c.PNG', 'RGBA', 19, 40), ('nested/d.jpeg', 'RGB', 64, 64),
      ('nested/deeper/e.JPG', 'RGB', 101, 77), ('nested/deeper/f.png', 'L', 9, 13),
  ]
  specs += [(f'nested/g{i}.png', 'RGB', 20 + i, 30) for i in range(34)]
  for rel, mode, width, height in specs:
    bands = len(mode) if mode != 'L' else 1
    pixels = rng.integers(0, 256, (height, width, bands), np.uint8)
    Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels, mode).save(
        root / rel)
  (root / 'notes.txt').write_text('not an image')
  return len(specs)


def test_folder_loads_all_kinds_and_splits_deterministically(tmp_path):
  num_images = _write_folder(tmp_path)
  train = images.folder_files(str(tmp_path), 'train')
  test = images.folder_files(str(tmp_path), 'test')
  assert not set(train) & set(test)
  assert len(train) + len(test) == num_images
  assert len(test) >= 1 and len(train) > len(test)
  assert images.folder_files(str(tmp_path), 'train') == train
  assert not any(f.endswith('.txt') for f in train + test)

  dataset = images.image_dataset('folder', data_path=str(tmp_path),
                                 image_size=16, batch_size=4, repeat=False)
  batches = [batch.numpy() for batch in dataset]
  assert len(batches) == len(train) // 4
  for batch in batches:
    assert batch.shape == (4, 16, 16, 3) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() < 1.0
  assert images.native_shape('folder', 16) == (16, 16, 3)


def test_folder_centre_square_and_grayscale_to_rgb(tmp_path):
  # 30 wide, 10 high: blue side bands, a red centre 10x10 square.
  wide = np.zeros((10, 30, 3), np.uint8)
  wide[..., 2] = 255
  wide[:, 10:20] = (255, 0, 0)
  gray = np.full((10, 10), 77, np.uint8)
  # Every file of a 2-file folder must be in 'train' for this test: pick names
  # whose hash lands there.
  names = [n for n in (f'img{i}' for i in range(100))
           if images._in_train_split(n + '.png')][:2]  # pylint: disable=protected-access
  Image.fromarray(wide).save(tmp_path / f'{names[0]}.png')
  Image.fromarray(gray, 'L').save(tmp_path / f'{names[1]}.png')
  out = _collect(images.image_dataset(
      'folder', data_path=str(tmp_path), image_size=10, batch_size=2,
      shuffle=False, repeat=False, random_flip=False, dequantize=False))
  by_name = dict(zip(sorted(names), out))
  np.testing.assert_array_equal(by_name[names[0]],
                                np.broadcast_to([1.0, 0.0, 0.0], (10, 10, 3)))
  np.testing.assert_allclose(by_name[names[1]], 77 / 255.0, atol=1e-6)


def test_folder_missing_or_empty_gives_clear_error(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match='does not exist'):
    images.image_dataset('folder', data_path=str(missing), image_size=32,
                         batch_size=2)
  empty = tmp_path / 'empty'
  (empty / 'sub').mkdir(parents=True)
  (empty / 'sub' / 'readme.md').write_text('no images here')
  with pytest.raises(FileNotFoundError, match='No images'):
    images.image_dataset('folder', data_path=str(empty), image_size=32,
                         batch_size=2)
  with pytest.raises(FileNotFoundError, match='--data_path'):
    images.image_dataset('folder', image_size=32, batch_size=2)


def test_unknown_names_and_splits_are_rejected(tmp_path):
  with pytest.raises(ValueError, match='unknown dataset'):
    images.native_shape('svhn', 32)
  with pytest.raises(ValueError, match='batch_size'):
    images.image_dataset('shapes', image_size=32, batch_size=0)
  _write_folder(tmp_path)
  with pytest.raises(ValueError, match='splits'):
    images.folder_files(str(tmp_path), 'validation')


def test_native_shapes():
  assert images.native_shape('mnist', None) == (28, 28, 1)
  assert images.native_shape('mnist', 28) == (28, 28, 1)
  assert images.native_shape('cifar10', None) == (32, 32, 3)
  assert images.native_shape('celeba', None) == (32, 32, 3)
  assert images.native_shape('celeba', 64) == (64, 64, 3)
  assert images.native_shape('shapes', None) == (32, 32, 3)
  assert images.native_shape('digits', None) == (16, 16, 1)
  assert set(catalog.image_names()) == {'mnist', 'cifar10', 'celeba', 'folder',
                                        'shapes', 'digits'}


class NcsnTestDigits(tfds.core.GeneratorBasedBuilder):
  """A tiny really-prepared TFDS dataset (generated locally, nothing downloaded).

  Example i is a 28x28x1 image filled with the value i, so shards can be told
  apart. It stands in for MNIST where the real read path (split metadata, the
  split-API sharding) must run, which `mock_data` bypasses.
  """

  VERSION = tfds.core.Version('1.0.0')
  NUM_TRAIN = 20

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
            {'image': tfds.features.Image(shape=(28, 28, 1))}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {'train': self._generate_examples(self.NUM_TRAIN)}

  def _generate_examples(self, num):
    for i in range(num):
      yield i, {'image': np.full((28, 28, 1), i, np.uint8)}


@pytest.fixture(name='prepared_dir')
def _prepared_dir(tmp_path_factory, monkeypatch):
  data_dir = tmp_path_factory.mktemp('tfds')
  NcsnTestDigits(data_dir=str(data_dir)).download_and_prepare()
  mnist = dataclasses.replace(catalog.get('mnist'), tfds_name=NcsnTestDigits.name)
  monkeypatch.setitem(catalog._DATASETS, 'mnist', mnist)  # pylint: disable=protected-access
  return str(data_dir)


def test_prepared_tfds_dataset_loads_and_shards_by_split(prepared_dir):
  def values(pipeline_id=0, num_pipelines=1):
    context = tf.distribute.InputContext(num_pipelines, pipeline_id,
                                         num_pipelines)
    batches = _collect(images.image_dataset(
        'mnist', image_size=None, batch_size=1, data_dir=prepared_dir,
        repeat=False, random_flip=False, dequantize=False,
        input_context=context))
    assert batches.shape[1:] == (28, 28, 1)
    return sorted(np.round(batches[:, 0, 0, 0] * 255).astype(int).tolist())

  everything = values()
  assert everything == list(range(NcsnTestDigits.NUM_TRAIN))
  first, second = values(0, 2), values(1, 2)
  assert len(first) == len(second) == NcsnTestDigits.NUM_TRAIN // 2
  assert not set(first) & set(second)
  assert sorted(first + second) == everything
