"""Redraws the README's shapes figures from a finished shapes run.

    python docs/figures/make_shapes_figures.py runs/shapes

writes, next to this script:

* shapes_data.png: 64 training images, in the same 8x8 grid as the samples;
* shapes_samples.png: the run's 64 final samples (`<workdir>/samples/samples.npz`);
* shapes_samples_zoom.png: the first 16 samples enlarged 4x (top row of each pair)
  above their nearest training image in Euclidean distance (bottom row), so a
  reader can see the samples are new images, not copies of the training set.
"""

import os
import sys

import numpy as np
from PIL import Image

from ncsn_tf import plots
from ncsn_tf.data import shapes

HERE = os.path.dirname(os.path.abspath(__file__))
ZOOM_SAMPLES = 16
ZOOM_PER_ROW = 8
ZOOM_FACTOR = 4


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
  grid = plots.image_grid(np.concatenate(rows), nrow=ZOOM_PER_ROW)
  return np.asarray(Image.fromarray(grid).resize(
      (grid.shape[1] * ZOOM_FACTOR, grid.shape[0] * ZOOM_FACTOR), Image.NEAREST))


def main(workdir: str):
  samples = np.load(os.path.join(workdir, 'samples', 'samples.npz'))['samples']
  size = samples.shape[1]
  train = shapes.shapes_split_images('train', image_size=size).astype(np.float32) / 255.0
  plots.save_png(plots.image_grid(train[:64]), os.path.join(HERE, 'shapes_data.png'))
  plots.save_png(plots.image_grid(samples), os.path.join(HERE, 'shapes_samples.png'))
  plots.save_png(zoom_figure(samples, train), os.path.join(HERE, 'shapes_samples_zoom.png'))


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python docs/figures/make_shapes_figures.py WORKDIR (e.g. runs/shapes)')
  main(sys.argv[1])
