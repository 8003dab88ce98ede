"""Redraws the README's shapes figures from a finished shapes run.

    python docs/figures/make_shapes_figures.py runs/shapes

writes, next to this script:

* shapes_data.png: 64 training images, in the same 8x8 grid as the samples;
* shapes_samples.png: the run's 64 final samples (`<workdir>/samples/samples.npz`);
* shapes_samples_zoom.png: the first 16 samples enlarged 4x (top row of each pair)
  above their nearest training image in Euclidean distance (bottom row), so a
  reader can see the samples are new images, not copies of the training set;
* shapes_denoising.png: what the trained (EMA) network knows at each noise level.
  Rows are test images; the first column the clean image, then for σ from large
  to small the one-step denoised estimate x̃ + σ² s(x̃, i) of x̃ = x + σ z, which
  is Tweedie's posterior mean E[x | x̃] when the score is exact.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf import train_lib
from ncsn_tf.data import shapes

HERE = os.path.dirname(os.path.abspath(__file__))
ZOOM_SAMPLES = 16
ZOOM_PER_ROW = 8
ZOOM_FACTOR = 4
DENOISE_IMAGES = 6
DENOISE_SIGMAS = (2.0, 1.0, 0.5, 0.3, 0.15, 0.05)
DENOISE_FACTOR = 2


def enlarge(grid: np.ndarray, factor: int) -> np.ndarray:
  """A uint8 grid [H, W, 3] scaled up `factor` times with nearest-neighbour pixels."""
  return np.asarray(Image.fromarray(grid).resize(
      (grid.shape[1] * factor, grid.shape[0] * factor), Image.NEAREST))


def nearest_training_images(samples: np.ndarray, train: np.ndarray) -> np.ndarray:
  """For each sample [N, H, W, C] in [0, 1], its nearest image in `train` (L2)."""
  flat_train = train.reshape(len(train), -1)
  flat_samples = samples.reshape(len(samples), -1)
  # ‖a - b‖² = ‖a‖² - 2 a·b + ‖b‖²; the ‖a‖² term does not change the argmin.
  scores = (flat_train ** 2).sum(axis=1)[None, :] - 2.0 * flat_samples @ flat_train.T
  return train[np.argmin(scores, axis=1)]


def zoom_figure(samples: np.ndarray, train: np.ndarray) -> np.ndarray:
  """Rows of samples, each above a row of their nearest training images; uint8."""
  picked = samples[:ZOOM_SAMPLES]
  nearest = nearest_training_images(picked, train)
  rows = []
  for start in range(0, len(picked), ZOOM_PER_ROW):
    rows.append(picked[start:start + ZOOM_PER_ROW])
    rows.append(nearest[start:start + ZOOM_PER_ROW])
  return enlarge(plots.image_grid(np.concatenate(rows), nrow=ZOOM_PER_ROW), ZOOM_FACTOR)


def denoising_figure(workdir: str) -> np.ndarray:
  """uint8 grid: per test image, the clean image then x̃ + σ² s(x̃) at DENOISE_SIGMAS."""
  with open(os.path.join(workdir, 'config.json')) as f:
    # The workdir given here, not the one recorded (relative to where training ran).
    config = config_lib.Config.from_dict(json.load(f)).replace(workdir=workdir)
  state = train_lib.restore_for_inference(config)
  clean = shapes.shapes_split_images('test', image_size=config.data.image_size,
                                     num_images=DENOISE_IMAGES).astype(np.float32) / 255.0
  rng = np.random.default_rng(0)
  columns = [clean]
  for target in DENOISE_SIGMAS:
    # The ladder level nearest (in log σ) to the wanted σ.
    level = int(np.argmin(np.abs(np.log(state.sigmas) - np.log(target))))
    sigma = float(state.sigmas[level])
    noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
    score = state.ema_model(tf.constant(noisy), tf.fill([DENOISE_IMAGES], level)).numpy()
    columns.append(np.clip(noisy + sigma**2 * score, 0.0, 1.0))
  # Row-major: image k's clean picture, then its denoised estimates.
  grid = plots.image_grid(np.stack(columns, axis=1).reshape(-1, *clean.shape[1:]),
                          nrow=len(columns))
  return enlarge(grid, DENOISE_FACTOR)


def main(workdir: str):
  samples = np.load(os.path.join(workdir, 'samples', 'samples.npz'))['samples']
  size = samples.shape[1]
  train = shapes.shapes_split_images('train', image_size=size).astype(np.float32) / 255.0
  plots.save_png(plots.image_grid(train[:64]), os.path.join(HERE, 'shapes_data.png'))
  plots.save_png(plots.image_grid(samples), os.path.join(HERE, 'shapes_samples.png'))
  plots.save_png(zoom_figure(samples, train), os.path.join(HERE, 'shapes_samples_zoom.png'))
  plots.save_png(denoising_figure(workdir), os.path.join(HERE, 'shapes_denoising.png'))


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python docs/figures/make_shapes_figures.py WORKDIR (e.g. runs/shapes)')
  main(sys.argv[1])
