"""The scikit-learn digits (ncsn_tf/data/digits.py) and labels through the image pipeline."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import REPO_ROOT

from ncsn_tf import catalog
from ncsn_tf import config as config_lib
from ncsn_tf.data import digits
from ncsn_tf.data import images
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.data import shapes

# Pixel k/255 is dequantised to k/256 + u/256, u in [0, 1): within 1/256 of k/255
# (exactly: |k/255 - (k + u)/256| = |k/255/256 - u/256| <= 1/256), plus float32 slack.
DEQUANT_TOL = 1.0 / 256.0 + 1e-5


def _source():
  from sklearn import datasets
  bunch = datasets.load_digits()
  return bunch.images, bunch.target


def test_the_split_is_fixed_stratified_disjoint_and_complete():
  source, target = _source()
  train, test = digits.split_indices('train'), digits.split_indices('test')
  assert (len(train), len(test)) == (digits.TRAIN_SIZE, digits.TEST_SIZE) == (1442, 355)
  assert not set(train) & set(test)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
  # Recomputed from scratch (cache cleared), the split is the same.
  digits._split_indices.cache_clear()
  np.testing.assert_array_equal(digits.split_indices('test'), test)
  # Every class: floor(n / 5) test examples, the rest train.
  per_class = np.bincount(target, minlength=10)
  np.testing.assert_array_equal(np.bincount(target[test], minlength=10), per_class // 5)
  np.testing.assert_array_equal(np.bincount(target[train], minlength=10), per_class - per_class // 5)
  for split, index in (('train', train), ('test', test)):
    x, y = digits.load_digits_split(split, 8)
    np.testing.assert_array_equal(y, target[index])
    np.testing.assert_array_equal(x[..., 0], np.round(source[index] * 255 / 16))


def test_levels_range_shapes_and_read_only_cache():
  levels = np.round(np.arange(17) * 255 / 16)  # 0, 16, 32, ..., 239, 255.
  x8, y8 = digits.load_digits_split('train', image_size=8)
  assert x8.shape == (1442, 8, 8, 1) and x8.dtype == np.uint8
  assert y8.shape == (1442,) and y8.dtype == np.int32 and set(y8) == set(range(10))
  np.testing.assert_array_equal(np.unique(x8), levels)  # All 17 levels, nothing else.
  x16, y16 = digits.load_digits_split('test')
  assert x16.shape == (355, 16, 16, 1) and x16.dtype == np.uint8
  assert x16.min() == 0 and x16.max() == 255 and y16.dtype == np.int32
  assert digits.load_digits_split('test')[0] is x16  # Cached ...
  with pytest.raises(ValueError):
    x16[0, 0, 0, 0] = 1  # ... and read-only, so no caller can change another's data.


def _bilinear_reference(image: np.ndarray, factor: int) -> np.ndarray:
  """Half-pixel-centre bilinear upscaling with clamped edges, float64 [n*f, n*f].

  Output pixel o samples the source at s = (o + 0.5) / f - 0.5, clamped to
  [0, n - 1], interpolating linearly between floor(s) and floor(s) + 1.
  """
  n = image.shape[0]
  s = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
  lo = np.floor(s).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  w = s - lo
  rows = image[lo] * (1 - w)[:, None] + image[hi] * w[:, None]
  return rows[:, lo] * (1 - w)[None, :] + rows[:, hi] * w[None, :]


@pytest.mark.parametrize('size', [16, 32])
def test_upscaling_is_bilinear_in_closed_form(size):
  source, _ = _source()
  native = source[digits.split_indices('test')] * 255 / 16
  upscaled, _ = digits.load_digits_split('test', size)
  reference = np.stack([_bilinear_reference(image, size // 8) for image in native])
  # Rounded once to uint8: within 0.5 of the exact value (1e-3 for float32 arithmetic).
  assert np.abs(upscaled[..., 0] - reference).max() <= 0.5 + 1e-3
  if size == 16:
    # Factor 2 weights neighbours 3/4 and 1/4 in each axis, which keeps each image's
    # mean; the rounding of 256 pixels moves the mean by at most 0.5.
    assert np.abs(upscaled.mean(axis=(1, 2, 3)) - native.mean(axis=(1, 2))).max() <= 0.5
    # A closed-form case: a vertical step 0 | 255 between columns 3 and 4 becomes
    # ..., 0, 63.75, 191.25, 255, ... around the edge.
    step = np.zeros((8, 8))
    step[:, 4:] = 255.0
    np.testing.assert_allclose(_bilinear_reference(step, 2)[0, 6:10], [0, 63.75, 191.25, 255])


def _originals(name, split, size):
  x, y = images.in_memory_split(name, split, size)
  flat = x.reshape(len(x), -1).astype(np.float32) / 255.0
  flipped = x[:, :, ::-1].reshape(len(x), -1).astype(np.float32) / 255.0
  return np.concatenate([flat, flipped]), np.concatenate([y, y]), len(x)


def _match(batch, candidates):
  """Index of each batch image's nearest candidate and the max abs difference to it."""
  b = batch.reshape(len(batch), -1)
  d2 = (b**2).sum(1)[:, None] + (candidates**2).sum(1)[None, :] - 2 * b @ candidates.T
  nearest = np.argmin(d2, axis=1)
  return nearest, np.abs(b - candidates[nearest]).max(axis=1)


def test_labels_stay_with_images_through_shards_shuffles_flips_and_noise():
  config = config_lib.Config(seed=3).replace(
      data={'dataset': 'digits', 'image_size': 16, 'random_flip': True}, train={'batch_size': 8})
  make = data_lib.dataset_fn(config, repeat=False, with_labels=True)
  candidates, labels, n = _originals('digits', 'train', 16)
  seen, flipped = [], 0
  for k in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=k,
                                         num_replicas_in_sync=2)
    x, y = (np.concatenate(a) for a in zip(*make(context).as_numpy_iterator()))
    assert x.shape[1:] == (16, 16, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert len(x) == (n // 2) // 4 * 4  # One pass over half the data, batches of 8 / 2.
    nearest, error = _match(x, candidates)
    # Each image is one original (or its mirror image) up to dequantisation ...
    assert error.max() <= DEQUANT_TOL and error.min() > 0  # (noise was added)
    # ... and carries that original's label.
    np.testing.assert_array_equal(y, labels[nearest])
    index = nearest % n
    assert np.any(np.diff(index) < 0)  # Shuffled.
    flipped += np.sum(nearest >= n)
    seen.append(set(index))
  assert len(seen[0]) + len(seen[1]) == 2 * ((n // 2) // 4 * 4)  # No repeats within a pass ...
  assert not seen[0] & seen[1]  # ... and the two pipelines read disjoint shards.
  assert 0.4 < flipped / (len(seen[0]) + len(seen[1])) < 0.6  # The flag flips about half.


def test_a_resumed_digits_stream_replays_to_the_exact_batch():
  # In memory like shapes: resuming at batch 8 (data.dataset_fn's start_batch) yields
  # exactly the batches, labels, flips and noise of an uninterrupted stream; 1442
  # images in batches of 128 cross the epoch boundary at batch 11.
  config = config_lib.Config(seed=5).replace(
      data={'dataset': 'digits', 'image_size': 8, 'random_flip': True}, train={'batch_size': 128})
  full = list(data_lib.dataset_fn(config, with_labels=True)().take(14).as_numpy_iterator())
  resumed = list(data_lib.dataset_fn(config, start_batch=8, with_labels=True)().take(6)
                 .as_numpy_iterator())
  assert len(resumed) == 6
  for (x, y), (xr, yr) in zip(full[8:], resumed):
    np.testing.assert_array_equal(x, xr)
    np.testing.assert_array_equal(y, yr)


def _visible_kind_by_painting(params, size):
  """Independent labels for hard-edged shapes: paint slot indices, count pixels."""
  coords = np.arange(size) + 0.5
  n = len(params['kind'])
  owner = np.full((n, size, size), -1)
  for slot in range(shapes.MAX_SHAPES):
    dy = coords[None, :, None] - params['centre'][:, slot, 0, None, None]
    dx = coords[None, None, :] - params['centre'][:, slot, 1, None, None]
    inside = shapes.signed_distance(params['kind'][:, slot, None, None], dx, dy,
                                    params['half'][:, slot, None, None]) <= 0
    owner[inside & params['active'][:, slot, None, None]] = slot
  counts = np.stack([(owner == s).sum(axis=(1, 2)) for s in range(shapes.MAX_SHAPES)], axis=1)
  return params['kind'][np.arange(n), counts.argmax(axis=1)], np.sort(counts, axis=1)


def test_shapes_labels_are_the_kind_of_the_largest_visible_object():
  size, seed = 16, 11
  labels = shapes.shapes_labels(300, size, seed, antialias=False)
  params = shapes._draw_parameters(np.random.default_rng(seed), 300, size)
  expected, counts = _visible_kind_by_painting(params, size)
  clear = counts[:, -1] > counts[:, -2]  # Ties in pixel count are arbitrary.
  assert clear.mean() > 0.9
  np.testing.assert_array_equal(labels[clear], expected[clear])
  assert labels.dtype == np.int32 and set(labels) == {shapes.DISC, shapes.SQUARE, shapes.TRIANGLE}
  # The split's labels follow the split's images (same seed stream and order).
  split_labels = shapes.shapes_split_labels('test', image_size=size)[:50]
  batch = next(iter(images.image_dataset('shapes', split='test', image_size=size, batch_size=50,
                                         shuffle=False, with_labels=True)))
  np.testing.assert_array_equal(batch[1].numpy(), split_labels)


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_tfds_labels_come_through_with_their_images(name):
  with tfds.testing.mock_data(num_examples=12):
    raw = list(tfds.load(name, split='train').as_numpy_iterator())
    plain = dict(split='train', image_size=None, batch_size=4, repeat=False, seed=2)
    x, y = (np.concatenate(a) for a in zip(*images.image_dataset(
        name, shuffle=False, random_flip=False, dequantize=False, with_labels=True,
        **plain).as_numpy_iterator()))
    xs, ys = (np.concatenate(a) for a in zip(*images.image_dataset(
        name, shuffle=True, random_flip=True, with_labels=True, **plain).as_numpy_iterator()))
  np.testing.assert_array_equal(np.round(x * 255), np.stack([e['image'] for e in raw]))
  np.testing.assert_array_equal(y, [e['label'] for e in raw])
  assert y.dtype == np.int32 and len(set(y)) > 1
  flat = x.reshape(len(x), -1)
  candidates = np.concatenate([flat, x[:, :, ::-1].reshape(len(x), -1)])
  nearest, error = _match(xs, candidates)
  assert error.max() <= DEQUANT_TOL
  np.testing.assert_array_equal(ys, np.concatenate([y, y])[nearest])


def _one_line_value_error(fn):
  with pytest.raises(ValueError) as info:
    fn()
  assert '\n' not in str(info.value)
  return str(info.value)


def test_bad_inputs_fail_in_one_line_before_any_work(tmp_path):
  kw = dict(split='train', image_size=16, batch_size=4, with_labels=True)
  for name in ('celeba', 'folder'):  # No labels; folder would otherwise want --data_path.
    assert 'has no class labels' in _one_line_value_error(lambda: images.image_dataset(name, **kw))
  toy = config_lib.Config().replace(data={'dataset': 'gmm'})
  assert 'has no class labels' in _one_line_value_error(
      lambda: data_lib.dataset_fn(toy, with_labels=True))
  assert 'splits' in _one_line_value_error(lambda: digits.load_digits_split('validation'))
  for size in (12, 0, -8, 8.0):
    assert 'multiple of 8' in _one_line_value_error(lambda: digits.load_digits_split('test', size))
  assert 'multiple of 8' in _one_line_value_error(lambda: images.native_shape('digits', 20))
  with pytest.raises(config_lib.ConfigError, match='--image_size: --dataset=digits needs a multiple of 8'):
    config_lib.validate(config_lib.Config(
        workdir=str(tmp_path / 'w'), export=config_lib.ExportConfig(str(tmp_path / 'e'))).replace(
        data={'dataset': 'digits', 'image_size': 20}, model={'name': 'unet'}))
  for size in (8, 16):  # The native size and the default are valid.
    config_lib.validate(config_lib.Config(
        workdir=str(tmp_path / 'w'), export=config_lib.ExportConfig(str(tmp_path / 'e'))).replace(
        data={'dataset': 'digits', 'image_size': size}, model={'name': 'unet'}))


def test_num_classes_and_native_shape():
  counts = {name: data_lib.num_classes(config_lib.DataConfig(dataset=name))
            for name in catalog.names()}
  assert counts == {**{toy: 0 for toy in catalog.toy_names()}, 'mnist': 10, 'cifar10': 10,
                    'celeba': 0, 'folder': 0, 'shapes': 3, 'digits': 10}
  assert images.native_shape('digits', None) == (16, 16, 1)
  assert images.native_shape('digits', 8) == (8, 8, 1)


def test_sample_mode_judges_both_sample_sets_of_a_digits_run(digits_run):
  # --mode=sample on a tiny tf_configs/digits.cfg run (conftest.py): classifier-free
  # guided samples (the cfg's --guidance=free) in samples_guided/, one row per class, and
  # with --guidance=none unconditional ones in samples/, each judged by the clean
  # classifier. (The cfg's whole train-sample-export command through run.py: the slow
  # test below, and tests/test_extending.py's digits.cfg command on every run.)
  from test_cli import run_cli
  for guidance in ('free', 'none'):
    result = run_cli(f'--flagfile={REPO_ROOT}/tf_configs/digits.cfg', f'--workdir={digits_run}',
                     '--image_size=8', '--ngf=4', '--num_scales=10', '--precision=float32',
                     '--mode=sample', f'--guidance={guidance}', '--num_samples=20',
                     '--sample_batch_size=20', '--sampling_steps=2')
    assert result.returncode == 0, result.stderr[-3000:]
  plain = np.load(os.path.join(digits_run, 'samples', 'latest', 'samples.npz'))
  guided = np.load(os.path.join(digits_run, 'samples_guided', 'latest', 'samples.npz'))
  assert plain['samples'].shape == guided['samples'].shape == (20, 8, 8, 1)
  assert 'labels' not in plain.files and guided['labels'].tolist() == sorted(list(range(10)) * 2)
  for name in ('samples', 'samples_guided'):
    with open(os.path.join(digits_run, name, 'latest', 'digit_judgement.json')) as f:
      judged = json.load(f)
    assert judged['samples']['num_images'] == 20 and judged['test_digits']['num_images'] == 355
    assert ('class_accuracy' in judged['samples']) == (name == 'samples_guided')
    assert judged['classifier']['test_accuracy'] > 0.95


@pytest.mark.slow  # 160 s on 2 cores; the test above covers the sample sets and their judge,
# tests/test_extending.py the cfg's command through run.py with a two-signature export,
# tests/test_python_api.py the image signatures' bodies (sample_class, inpaint, log_likelihood).
def test_the_digits_flagfile_trains_judges_both_sample_sets_and_exports(tmp_path):
  # The user's command, tf_configs/digits.cfg through run.py, shrunk: training,
  # unconditional samples in samples/ and classifier-free guided ones in
  # samples_guided/, each judged by the clean classifier, and the export.
  from test_cli import run_cli
  workdir, export_dir = tmp_path / 'run', tmp_path / 'export'
  result = run_cli(f'--flagfile={REPO_ROOT}/tf_configs/digits.cfg', f'--workdir={workdir}',
                   f'--export_dir={export_dir}', '--ngf=4', '--image_size=8', '--batch_size=8', '--train_steps=2',
                   '--train_minutes=0', '--snapshot_freq=2', '--log_freq=1', '--heldout_batches=1',
                   '--sampling_steps=2', '--num_samples=20', '--sample_batch_size=20')
  assert result.returncode == 0, result.stderr[-3000:]
  plain = np.load(workdir / 'samples' / 'latest' / 'samples.npz')
  guided = np.load(workdir / 'samples_guided' / 'latest' / 'samples.npz')
  assert plain['samples'].shape == guided['samples'].shape == (20, 8, 8, 1)
  assert 'labels' not in plain.files and guided['labels'].tolist() == sorted(list(range(10)) * 2)
  for name in ('samples', 'samples_guided'):
    judged = json.loads((workdir / name / 'latest' / 'digit_judgement.json').read_text())
    assert judged['samples']['num_images'] == 20 and judged['test_digits']['num_images'] == 355
    assert ('class_accuracy' in judged['samples']) == (name == 'samples_guided')
    assert judged['classifier']['test_accuracy'] > 0.95
  assert (export_dir / '1' / 'saved_model.pb').exists()
