"""Image input pipelines for NCSN: MNIST, CIFAR-10, CelebA, image folders, shapes, digits.

Every source goes through the same path:

  source -> uint8 [H, W, C] at the final size  (decode, CelebA centre crop, resize)
            (with its int32 label if with_labels; shapes and digits from memory)
         -> shard (tf.distribute.InputContext) -> shuffle -> repeat
         -> batch(batch_size, drop_remainder)  (batch_size is PER REPLICA)
         -> random horizontal flip, uniform dequantisation, optional logit transform
         -> prefetch

Preprocessing follows the reference implementation (ermongroup/ncsn,
`runners/anneal_runner.py`):
  * CelebA: centre crop 140x140 of the aligned 218x178 faces, then resize to
    `image_size` (32 in the paper).
  * Optional random horizontal flip (the paper's configs use it for CIFAR-10 and
    CelebA, not for MNIST).
  * Uniform dequantisation of x in [0, 1] on the k/255 grid:
    x * 255/256 + u/256, u ~ U[0, 1), so every pixel lands in [k/256, (k+1)/256).
  * Optional logit transform with lambda = 1e-6.

Resized images are rounded back to uint8 before dequantisation, exactly as the
reference's PIL resize does, so the data are always on the 256-level grid that the
dequantisation noise assumes.

All randomness (shuffling, flips, noise) derives from `seed` through stateless ops,
so a pipeline built twice with the same arguments yields the same batches.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import catalog

# Logit-transform lambda of the reference implementation.
LOGIT_LAMBDA = 1e-6
# Pixel levels of 8-bit images and dequantisation bins: x*255/256 + u/256.
_LEVELS = 255.0
_BINS = 256.0
# Examples held in the shuffle buffer (uint8 images at the final size: 10k CelebA
# 64x64 images are about 120 MB).
SHUFFLE_BUFFER = 10_000
# Image folders: extensions read, and the percentage of files in the 'train' split
# (the rest is 'test'); the split is a hash of the relative path, so it is stable
# across machines, file systems and additions of new files.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
FOLDER_TRAIN_PERCENT = 95
FOLDER_SPLITS = ('train', 'test')


class DatasetUnavailableError(FileNotFoundError):
  """A TFDS dataset is not downloaded and prepared in the data directory."""


class CorruptImageFolderError(FileNotFoundError):
  """More than FOLDER_MAX_BAD_FRACTION of an image folder's files are unreadable."""


# Image folders: files that are empty or are not JPEG/PNG/GIF/BMP inside are
# skipped with a warning that counts them; more than this fraction of bad
# files is an error (the folder is probably not what --data_path meant).
# Files whose header is fine but whose data are truncated or corrupt are
# dropped when decoding fails (tf.data ignore_errors, logged by TensorFlow).
FOLDER_MAX_BAD_FRACTION = 0.1
_IMAGE_MAGIC = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'GIF87a', b'GIF89a', b'BM')


def native_shape(name: str, image_size: int | None) -> tuple[int, int, int]:
  """(H, W, C) of the images `image_dataset(name, image_size=...)` yields.

  MNIST is 28x28x1, CIFAR-10 32x32x3, CelebA, folders and shapes are
  image_size x image_size x 3 (32 by default; the paper uses 32 for CelebA),
  digits image_size x image_size x 1 (16 by default; a multiple of 8).
  A given `image_size` that differs from the native size means "resize to it".
  """
  spec = _image_spec(name)
  size = spec.default_size if image_size is None else int(image_size)
  if size <= 0:
    raise ValueError(f'image_size must be positive, got {image_size}.')
  if spec.in_memory and size % spec.size_multiple:
    raise ValueError(f'{name}: image_size must be a multiple of {spec.size_multiple} '
                     f'(its native size), got {size}')
  return size, size, spec.channels


def logit_transform(x, lam: float = LOGIT_LAMBDA):
  """Maps x in [0, 1] to logit(lam + (1 - 2 lam) x), finite for x in {0, 1}.

  Any shape; float. With lam = 1e-6 the output lies in about [-13.8, 13.8].
  """
  x = tf.convert_to_tensor(x)
  p = lam + (1.0 - 2.0 * lam) * x
  # 1 - p, computed from 1 - x rather than by subtraction from p: in float32,
  # 1 - (1 - 1e-6) loses about 1% to rounding, which would make the transform
  # asymmetric (logit of 1 would be 13.80 instead of 13.82).
  one_minus_p = lam + (1.0 - 2.0 * lam) * (1.0 - x)
  return tf.math.log(p) - tf.math.log(one_minus_p)


def inverse_logit_transform(y, lam: float = LOGIT_LAMBDA):
  """Exact inverse of `logit_transform`: (sigmoid(y) - lam) / (1 - 2 lam).

  Any shape; float. Not clipped: samples slightly outside the data range map to
  slightly outside [0, 1], which callers clip for display.
  """
  y = tf.convert_to_tensor(y)
  return (tf.math.sigmoid(y) - lam) / (1.0 - 2.0 * lam)


def dequantize(x, seed):
  """Uniform dequantisation: x * 255/256 + u/256 with u ~ U[0, 1).

  Args:
    x: float32, any shape, values on the grid k/255, k = 0..255.
    seed: stateless seed, int tensor of shape [2].

  Returns:
    float32 of x's shape; pixel k lands uniformly in [k/256, (k+1)/256) within
    [0, 1), so the data get a continuous density the score can be learned for.
  """
  x = tf.convert_to_tensor(x, tf.float32)
  noise = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=tf.float32)
  return x * (_LEVELS / _BINS) + noise / _BINS


def random_flip_left_right(images, seed):
  """Flips each image of a batch [B, H, W, C] left-right with probability 1/2."""
  flip = tf.random.stateless_uniform(tf.shape(images)[:1], seed=seed) < 0.5
  return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def image_dataset(name: str, *, split: str = 'train', image_size: int | None,
                  batch_size: int, data_dir: str | None = None,
                  data_path: str | None = None, random_flip: bool = True,
                  dequantize: bool = True, logit_transform: bool = False,
                  shuffle: bool = True, repeat: bool = True, seed: int = 0,
                  input_context: tf.distribute.InputContext | None = None,
                  with_labels: bool = False) -> tf.data.Dataset:
  """Batched float32 images (and optionally labels) for training or evaluation.

  Args:
    name: an image dataset of ncsn_tf/catalog.py.
    split: 'train' or 'test' (CelebA also 'validation'; any TFDS split string such
      as 'train[:90%]' works for the TFDS datasets).
    image_size: output side length; None for the native size (see native_shape).
    batch_size: examples per batch PER REPLICA (per input pipeline).
    data_dir: TFDS data directory (default: TFDS's, ~/tensorflow_datasets).
    data_path: root directory of the images for name='folder' (read recursively).
    random_flip: flip each image left-right with probability 1/2.
    dequantize: add uniform dequantisation noise (see `dequantize`).
    logit_transform: map to logit space (see `logit_transform`).
    shuffle: shuffle examples (and TFDS files).
    repeat: repeat forever; otherwise one pass over this pipeline's shard.
    seed: seeds shuffling, flips and noise; same arguments -> same batches.
    input_context: from `strategy.distribute_datasets_from_function`; each input
      pipeline then reads a disjoint 1/num_input_pipelines of the data.
    with_labels: also yield each image's class (labelled datasets only).
      Labels travel with their images through sharding, shuffling, flips and
      noise.

  Returns:
    tf.data.Dataset of float32 [batch_size, H, W, C] (H, W, C = native_shape),
    in [0, 1] (dequantised values lie in [0, 1)), or in logit space
    (about [-13.8, 13.8]) if logit_transform. With labels, of tuples
    (images, labels int32 [batch_size] in [0, the dataset's classes)).

  Raises:
    DatasetUnavailableError: a TFDS dataset is not prepared in data_dir.
    FileNotFoundError: name='folder' and data_path is missing or has no images.
    ValueError: unknown name or split, a non-positive batch_size/image_size, or
      with_labels for a dataset without labels (celeba, folder).
  """
  height, width, channels = native_shape(name, image_size)
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  spec = catalog.get(name)
  if with_labels and not spec.num_classes:
    raise ValueError(f'--dataset={name} has no class labels; labelled datasets: '
                     f'{", ".join(catalog.labelled())}.')
  num_pipelines, pipeline_id = _pipeline_index(input_context)
  # Independent seeds per purpose and per input pipeline, so pipelines neither share
  # nor correlate their shuffles and noise. TFDS file shuffling keeps the base
  # seed: example-level sharding needs every pipeline to see one common order.
  shuffle_seed, noise_seed = (
      int(s) for s in np.random.SeedSequence([seed, pipeline_id]).generate_state(2))

  # Elements: uint8 images [H, W, C], or (image, int32 label) with labels.
  if spec.source == 'tfds':
    images = _tfds_images(name, split=split, size=height, data_dir=data_dir,
                          shuffle_files=shuffle, seed=seed,
                          num_pipelines=num_pipelines, pipeline_id=pipeline_id,
                          with_labels=with_labels)
  elif spec.source == 'folder':
    images = _folder_images(data_path, split=split, size=height, shuffle=shuffle,
                            seed=shuffle_seed, num_pipelines=num_pipelines,
                            pipeline_id=pipeline_id)
  else:  # Held in memory (shapes, digits, a registered dataset).
    arrays = in_memory_split(name, split, height, with_labels=with_labels)
    images = tf.data.Dataset.from_tensor_slices(
        arrays if with_labels else arrays[0]).shard(num_pipelines, pipeline_id)
  shape = (height, width, channels)
  if with_labels:
    images = images.map(lambda image, label: (tf.ensure_shape(image, shape),
                                              tf.ensure_shape(label, ())))
  else:
    images = images.map(lambda image: tf.ensure_shape(image, shape))

  if shuffle:
    images = images.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed,
                            reshuffle_each_iteration=True)
  if repeat:
    images = images.repeat()
  batches = images.batch(batch_size, drop_remainder=True)
  # One stateless seed per batch from a seeded random stream: deterministic whatever
  # the map's parallelism, and fresh noise every epoch.
  batch_seeds = tf.data.Dataset.random(seed=noise_seed).batch(2)
  batches = tf.data.Dataset.zip((batches, batch_seeds))
  augment = _make_augment(random_flip=random_flip, add_noise=dequantize,
                          to_logit=logit_transform)
  if with_labels:
    # Flips and noise act per example on the images only; the label rides along.
    batches = batches.map(lambda pair, seed: (augment(pair[0], seed), pair[1]),
                          num_parallel_calls=tf.data.AUTOTUNE)
  else:
    batches = batches.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  return batches.prefetch(tf.data.AUTOTUNE)


def in_memory_split(name: str, split: str, size: int, *, with_labels: bool = True
                    ) -> tuple[np.ndarray, np.ndarray | None]:
  """(uint8 images [N, size, size, C], int32 labels [N] or None) of a dataset held in
  memory (the catalog row's `load`: shapes, digits, a registered one)."""
  spec = catalog.get(name)
  if not spec.in_memory:
    raise ValueError(f'{name!r} is not held in memory (its source is {spec.source})')
  if split not in spec.splits:
    raise ValueError(f'{name} has the splits {", ".join(spec.splits)}, got {split!r}')
  images, labels = spec.load(split, size)
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.shape[1:] != (size, size, spec.channels):
    raise ValueError(f'{name}: load({split!r}, {size}) must return uint8 images '
                     f'[N, {size}, {size}, {spec.channels}], got {images.dtype} {images.shape}')
  if not with_labels:
    return images, None
  return images, np.asarray(labels, np.int32)


def folder_files(data_path: str, split: str = 'train') -> list[str]:
  """Sorted JPEG/PNG paths under `data_path` (recursive) in `split`.

  'train' holds about FOLDER_TRAIN_PERCENT % of the files, chosen by an MD5 hash of
  each path relative to data_path; 'test' holds the rest.

  Raises:
    FileNotFoundError: data_path does not exist or holds no JPEG/PNG files.
    ValueError: unknown split.
  """
  if split not in FOLDER_SPLITS:
    raise ValueError(f"Image folders have splits {FOLDER_SPLITS}, got {split!r}.")
  if not data_path:
    raise FileNotFoundError(
        "--dataset=folder needs --data_path=DIR, a directory of JPEG/PNG images.")
  if not tf.io.gfile.isdir(data_path):
    raise FileNotFoundError(
        f'Image folder {data_path!r} does not exist or is not a directory.')
  all_files = sorted(
      os.path.join(root, file_name)
      for root, _, file_names in tf.io.gfile.walk(data_path)
      for file_name in file_names
      if file_name.lower().endswith(IMAGE_EXTENSIONS))
  if not all_files:
    raise FileNotFoundError(
        f'No images (extensions {", ".join(IMAGE_EXTENSIONS)}) found under '
        f'{data_path!r} (searched recursively).')
  want_train = split == 'train'
  files = [f for f in all_files
           if _in_train_split(os.path.relpath(f, data_path)) == want_train]
  if not files:
    raise FileNotFoundError(
        f"Split {split!r} of image folder {data_path!r} is empty: its "
        f"{len(all_files)} image(s) all fall in the other split "
        f"({FOLDER_TRAIN_PERCENT}/{100 - FOLDER_TRAIN_PERCENT} hash split).")
  return files


def check_folder_files(files: list[str], data_path: str = '') -> list[str]:
  """The files that look like images (non-empty, a JPEG/PNG/GIF/BMP header).

  Logs a warning counting the skipped files; raises CorruptImageFolderError
  if more than FOLDER_MAX_BAD_FRACTION of them are bad.
  """
  good, bad = [], []
  for path in files:
    try:
      with tf.io.gfile.GFile(path, 'rb') as f:
        head = f.read(8)
    except (OSError, tf.errors.OpError):
      head = b''
    (good if head.startswith(_IMAGE_MAGIC) else bad).append(path)
  if bad:
    message = (f'{len(bad)} of {len(files)} files under {data_path!r} are empty or not '
               f'JPEG/PNG images (e.g. {bad[0]!r})')
    if len(bad) > FOLDER_MAX_BAD_FRACTION * len(files):
      raise CorruptImageFolderError(
          f'{message}: more than {FOLDER_MAX_BAD_FRACTION:.0%} are bad, so this is probably '
          f'not an image folder; remove or fix them, or point --data_path elsewhere.')
    logging.warning('%s: skipping them.', message)
  return good


def _image_spec(name: str) -> catalog.DatasetSpec:
  spec = catalog.get(name)
  if spec.is_toy:
    raise ValueError(f'{name!r} is a 2-D toy, not an image dataset; image datasets: '
                     f'{", ".join(catalog.image_names())}')
  return spec


def _pipeline_index(input_context) -> tuple[int, int]:
  if input_context is None:
    return 1, 0
  return input_context.num_input_pipelines, input_context.input_pipeline_id


def _unavailable_message(name: str, tfds_name: str, data_dir: str) -> str:
  # One line, so that it survives log formatting and reads as a single error.
  return (
      f"Dataset '{name}' (TFDS '{tfds_name}') is not prepared in TFDS data_dir "
      f"{data_dir!r} and will not be downloaded. Get it one of three ways: "
      f"(1) download and prepare it with TFDS on a machine with internet: "
      f"`tfds build {tfds_name} --data_dir={data_dir}` (or tfds.load('{tfds_name}', "
      f"data_dir=..., download=True)); "
      f"(2) if the automatic download fails (CelebA's Google Drive quota often "
      f"does), place the manual archive(s) in TFDS's manual_dir "
      f"({os.path.join(data_dir, 'downloads', 'manual')}) and run "
      f"`tfds build {tfds_name} --manual_dir=...`; "
      f"(3) train on your own images instead: --dataset=folder --data_path=DIR.")


def _tfds_images(name: str, *, split: str, size: int, data_dir: str | None,
                 shuffle_files: bool, seed: int, num_pipelines: int,
                 pipeline_id: int, with_labels: bool = False) -> tf.data.Dataset:
  """uint8 [size, size, C] images of a TFDS dataset, this pipeline's shard.

  With labels, (image, int32 label) pairs from the TFDS 'label' feature.
  """
  import tensorflow_datasets as tfds  # Only tfds sources pay for importing it (seconds).
  tfds_name = catalog.get(name).tfds_name
  # Building the builder reads only metadata; nothing is downloaded or prepared.
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  # When the split sizes are known (a prepared dataset), shard with the split API:
  # each pipeline then reads only its own contiguous 1/n of the records. Otherwise
  # fall back to example-level `shard` below, which needs the same example order
  # in every pipeline (common shuffle seed for the files).
  shard_by_split = num_pipelines > 1 and _split_is_known(builder, split)
  read_split = (tfds.even_splits(split, n=num_pipelines)[pipeline_id]
                if shard_by_split else split)
  read_config = tfds.ReadConfig(shuffle_seed=seed)
  try:
    dataset = builder.as_dataset(split=read_split, shuffle_files=shuffle_files,
                                 read_config=read_config)
  except AssertionError as err:
    # TFDS's own "not prepared" check (data_path missing), made before any record
    # is read. It is used instead of `builder.is_prepared()`, which
    # `tfds.testing.mock_data` does not patch.
    data_root = str(getattr(builder, 'data_dir_root', data_dir))
    raise DatasetUnavailableError(
        _unavailable_message(name, tfds_name, data_root)) from err
  if num_pipelines > 1 and not shard_by_split:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  preprocess = _make_tfds_preprocess(name, size)
  if with_labels:
    return dataset.map(
        lambda example: (preprocess(example), tf.cast(example['label'], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)


def _split_is_known(builder, split: str) -> bool:
  try:
    return builder.info.splits[split].num_examples > 0
  except (KeyError, ValueError, TypeError):
    # Unprepared (or mocked) datasets have no split metadata.
    return False


def _make_tfds_preprocess(name: str, size: int) -> Callable:
  """example dict -> uint8 [size, size, C]; centre-cropped first where the catalog says
  (CelebA: 140x140 of the aligned 218x178 faces)."""

  crop = catalog.get(name).center_crop

  def preprocess(example):
    image = example['image']
    if crop:
      image = _center_crop(image, crop)
    return _resize_uint8(image, size)

  return preprocess


def _center_crop(image, crop: int):
  """Centre crop [H, W, C] -> [crop, crop, C]; offsets rounded like torchvision."""
  shape = tf.shape(image)
  top = tf.cast(tf.round((shape[0] - crop) / 2), tf.int32)
  left = tf.cast(tf.round((shape[1] - crop) / 2), tf.int32)
  return tf.image.crop_to_bounding_box(image, top, left, crop, crop)


def _center_square(image):
  """Largest centred square of an [H, W, C] image."""
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  return tf.image.crop_to_bounding_box(
      image, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side)


def _resize_uint8(image, size: int):
  """Resizes uint8 [h, w, C] to uint8 [size, size, C]; no-op at the same size.

  Antialiased bilinear, like PIL's resize in the reference, then rounded back to
  uint8 so the result stays on the 8-bit grid that dequantisation assumes.
  """
  shape = tf.shape(image)

  def resize():
    resized = tf.image.resize(image, (size, size), method='bilinear',
                              antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

  same_size = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
  image = tf.cond(same_size, lambda: tf.identity(image), resize)
  channels = image.shape[-1]
  return tf.ensure_shape(image, (size, size, channels))


def _in_train_split(relative_path: str) -> bool:
  # MD5 rather than hash(): Python's str hash is salted per process.
  digest = hashlib.md5(relative_path.replace(os.sep, '/').encode('utf-8')).digest()
  return int.from_bytes(digest[:4], 'big') % 100 < FOLDER_TRAIN_PERCENT


def _folder_images(data_path: str | None, *, split: str, size: int, shuffle: bool,
                   seed: int, num_pipelines: int, pipeline_id: int
                   ) -> tf.data.Dataset:
  """uint8 [size, size, 3] images of an image folder, this pipeline's shard."""
  files = check_folder_files(folder_files(data_path, split), data_path)
  paths = tf.data.Dataset.from_tensor_slices(files).shard(num_pipelines,
                                                          pipeline_id)
  if shuffle:
    # Shuffling names is cheap, so shuffle them all before any decoding.
    paths = paths.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

  def load(path):
    # channels=3 turns grayscale into RGB and drops alpha; expand_animations=False
    # keeps the result rank 3 (the first frame of an animated file).
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
    return _resize_uint8(_center_square(image), size)

  # A truncated or corrupt file past the header check fails to decode: drop it
  # (TensorFlow logs each) rather than stop training.
  return paths.map(load, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)


def _make_augment(*, random_flip: bool, add_noise: bool, to_logit: bool
                  ) -> Callable:
  """(uint8 batch [B, H, W, C], seed [2]) -> float32 batch [B, H, W, C]."""

  def augment(batch, seed):
    flip_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    x = tf.cast(batch, tf.float32) / _LEVELS
    if random_flip:
      x = random_flip_left_right(x, flip_seed)
    if add_noise:
      x = dequantize(x, noise_seed)
    if to_logit:
      x = logit_transform(x)
    return x

  return augment
