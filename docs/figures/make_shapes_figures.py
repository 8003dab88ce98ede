"""Redraws the README's shapes figures from a finished shapes run.

    python docs/figures/make_shapes_figures.py runs/shapes
    python docs/figures/make_shapes_figures.py runs/shapes_refinenet _refinenet

writes, next to this script (with SUFFIX before `.png`, and without the data
figure, when a suffix is given):

* shapes_data.png: 64 training images, in the same 8x8 grid as the samples;
* shapes_samples.png: the run's 64 final samples (`<workdir>/samples/samples.npz`);
* shapes_samples_zoom.png: the first 16 samples enlarged 4x (top row of each pair)
  above their nearest training image in Euclidean distance (bottom row), so a
  reader can see the samples are new images, not copies of the training set;
* shapes_denoising.png: what the trained (EMA) network knows at each noise level.
  Rows are test images; the first column the clean image, then for σ from large
  to small the one-step denoised estimate x̃ + σ² s(x̃, i) of x̃ = x + σ z, which
  is Tweedie's posterior mean E[x | x̃] when the score is exact;
* shapes_restart.png: where the sampler loses the shapes. Rows are test images;
  the clean image, then the chain restarted from x + σ_k z at level k for
  σ_k ≈ RESTART_SIGMAS, run to σ_L by annealed Langevin (the run's T, step and
  final denoising), then the same starts run by deterministic steps
  x <- D + (σ_{i+1}/σ_i)(x - D), D = x + σ_i² s(x, i) (DDIM's update on this
  ladder, one network call per level). With the exact score both would return an
  image like the original from a small σ_k.
* shapes_erosion.png: how much of the image the objects cover along the chain.
  EROSION_SAMPLES samples are drawn by the run's annealed Langevin; at the end of
  every level, the share of foreground pixels (shape_fit.foreground) of the
  one-step denoised estimate D = x + σ_i² s(x, i), averaged over the samples that
  end with an object and over those that end empty, beside the same share of D
  for noisy test images at that level (what the chain should show if it kept the
  data's distribution) and of the clean test images. Levels σ <= EROSION_MAX_SIGMA
  only: above it D is a blurred average of many images, not objects on a background.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image




from ncsn_tf import plots

from ncsn_tf.data import shapes
from ncsn_tf.metrics import shape_fit
from ncsn_tf.sampling import langevin
from ncsn_tf import config as config_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.runtime import checkpoints
from ncsn_tf.serving import module as serving_module

HERE = os.path.dirname(os.path.abspath(__file__))
ZOOM_SAMPLES = 16
ZOOM_PER_ROW = 8
ZOOM_FACTOR = 4
DENOISE_IMAGES = 6
DENOISE_SIGMAS = (2.0, 1.0, 0.5, 0.3, 0.15, 0.05)
DENOISE_FACTOR = 2
RESTART_SIGMAS = (0.15, 0.5, 1.0)
EROSION_SAMPLES = 128
EROSION_MAX_SIGMA = 3.0


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


def restore(workdir: str):
  """(config, state) of the run in `workdir`, with its EMA weights."""
  with open(os.path.join(workdir, 'config.json')) as f:
    # The workdir given here, not the one recorded (relative to where training ran).
    config = config_lib.Config.from_dict(json.load(f)).replace(workdir=workdir)
  return config, checkpoints.restore_for_inference(config)


def held_out_images(config, num: int = DENOISE_IMAGES) -> np.ndarray:
  """The first `num` test images, float32 [num, S, S, 3] in [0, 1]."""
  return shapes.shapes_split_images('test', image_size=config.data.image_size,
                                    num_images=num).astype(np.float32) / 255.0


def nearest_level(sigmas: np.ndarray, target: float) -> int:
  """The ladder level nearest (in log σ) to the wanted σ."""
  return int(np.argmin(np.abs(np.log(sigmas) - np.log(target))))


def denoising_figure(config, state) -> np.ndarray:
  """uint8 grid: per test image, the clean image then x̃ + σ² s(x̃) at DENOISE_SIGMAS."""
  clean = held_out_images(config)
  rng = np.random.default_rng(0)
  columns = [clean]
  for target in DENOISE_SIGMAS:
    level = nearest_level(state.sigmas, target)
    sigma = float(state.sigmas[level])
    noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
    score = state.ema_model(tf.constant(noisy), tf.fill([DENOISE_IMAGES], level)).numpy()
    columns.append(np.clip(noisy + sigma**2 * score, 0.0, 1.0))
  return columns_figure(columns)


def columns_figure(columns) -> np.ndarray:
  """uint8 grid, enlarged, with one row per image and one column per entry of
  `columns` (each float [N, H, W, C] in [0, 1], the same N images)."""
  images = np.stack(columns, axis=1)  # [N, columns, H, W, C]: row-major per image
  grid = plots.image_grid(images.reshape(-1, *images.shape[2:]), nrow=len(columns))
  return enlarge(grid, DENOISE_FACTOR)


def deterministic_descent(model, x, sigmas, start: int) -> np.ndarray:
  """x at level `start` to level L by x <- D + (σ_{i+1}/σ_i)(x − D), then x <- D at σ_L.

  D = x + σ_i² s(x, i) is the one-step denoised estimate; the update keeps the
  current noise direction and shrinks it to the next level's σ (no fresh noise).
  """
  x = tf.constant(x)
  denoise = lambda x, i: x + sigmas[i]**2 * model(x, tf.fill([len(x)], i))
  for i in range(start, len(sigmas) - 1):
    denoised = denoise(x, i)
    x = denoised + sigmas[i + 1] / sigmas[i] * (x - denoised)
  return denoise(x, len(sigmas) - 1).numpy()


def restart_figure(config, state) -> np.ndarray:
  """uint8 grid: per test image, the clean image, annealed Langevin and then
  deterministic descents restarted from x + σ_k z for σ_k ≈ RESTART_SIGMAS."""
  clean = held_out_images(config)
  sigmas = state.sigmas.astype(np.float32)
  model = state.ema_model
  s = config.sampling
  rng = np.random.default_rng(1)
  langevin_columns, deterministic_columns = [], []
  for target in RESTART_SIGMAS:
    start = nearest_level(sigmas, target)
    noisy = clean + sigmas[start] * rng.standard_normal(clean.shape).astype(np.float32)
    # Levels start..L-1 of the ladder; the step sizes step_lr·(σ_i/σ_L)² are those
    # of the full chain because the slice ends at the same σ_L.
    offset_score = lambda x, i, start=start: model(x, i + start)  # pylint: disable=cell-var-from-loop
    chain = langevin.annealed_langevin_dynamics(
        offset_score, noisy, sigmas[start:], n_steps_each=s.n_steps_each, step_lr=s.step_lr,
        seed=[config.seed, start], denoise=s.denoise)
    langevin_columns.append(np.clip(chain.numpy(), 0.0, 1.0))
    deterministic_columns.append(
        np.clip(deterministic_descent(model, noisy, sigmas, start), 0.0, 1.0))
  return columns_figure([clean] + langevin_columns + deterministic_columns)


def foreground_share(images) -> float:
  """Mean share of foreground pixels of float images [N, S, S, 3] (clipped to [0, 1])."""
  return float(np.mean([shape_fit.foreground(image)[1].mean() for image in np.clip(images, 0, 1)]))


def erosion_figure(config, state):
  """A matplotlib figure: foreground share of the denoised chain per level (see the docstring)."""
  sigmas = state.sigmas.astype(np.float32)
  levels = len(sigmas)
  model, s = state.ema_model, config.sampling
  denoise = lambda x, i: x + sigmas[i]**2 * np.asarray(model(x, tf.fill([len(x)], i)), np.float32)
  x_init = serving_module.initial_state(data_lib.data_shape(config.data), tf.constant(EROSION_SAMPLES),
                                    tf.constant([config.seed, 0]), config.data)
  # One snapshot per level: the state at the end of each level's T steps (the
  # last one after the final denoising step when the run denoises).
  sample = tf.function(lambda x: langevin.annealed_langevin_dynamics(
      model, x, sigmas, n_steps_each=s.n_steps_each, step_lr=s.step_lr,
      seed=[config.seed, 1000], num_snapshots=levels, denoise=s.denoise))
  final, chain = sample(x_init)
  ends_empty = np.array([not shape_fit.object_fits(image) for image in np.clip(final.numpy(), 0, 1)])
  test = held_out_images(config, EROSION_SAMPLES)
  rng = np.random.default_rng(2)
  shown = np.flatnonzero(sigmas <= EROSION_MAX_SIGMA)
  curves = {'samples that end with objects': [], 'samples that end empty': [],
            'noisy test images': []}
  for i in shown:
    denoised = denoise(chain[i].numpy(), i)
    curves['samples that end with objects'].append(foreground_share(denoised[~ends_empty]))
    curves['samples that end empty'].append(foreground_share(denoised[ends_empty]))
    noisy = test + sigmas[i] * rng.standard_normal(test.shape).astype(np.float32)
    curves['noisy test images'].append(foreground_share(denoise(noisy, i)))
  curves['clean test images'] = [foreground_share(test)] * len(shown)
  if not ends_empty.any():
    del curves['samples that end empty']
  title = f'{int(ends_empty.sum())} of {EROSION_SAMPLES} samples end empty'
  fig = plots.per_sigma_figure(sigmas[shown], curves, 'foreground share of D(x)', title,
                               yscale='linear')
  fig.axes[0].invert_xaxis()  # the chain runs from large σ to small
  return fig


def main(workdir: str, suffix: str = ''):
  samples = np.load(os.path.join(workdir, 'samples', 'samples.npz'))['samples']
  size = samples.shape[1]
  train = shapes.shapes_split_images('train', image_size=size).astype(np.float32) / 255.0
  figure_path = lambda name: os.path.join(HERE, f'shapes_{name}{suffix}.png')
  if not suffix:  # the data figure does not depend on the run
    plots.save_png(plots.image_grid(train[:64]), figure_path('data'))
  plots.save_png(plots.image_grid(samples), figure_path('samples'))
  plots.save_png(zoom_figure(samples, train), figure_path('samples_zoom'))
  config, state = restore(workdir)
  plots.save_png(denoising_figure(config, state), figure_path('denoising'))
  plots.save_png(restart_figure(config, state), figure_path('restart'))
  plots.save_figure(erosion_figure(config, state), figure_path('erosion'))


if __name__ == '__main__':
  if len(sys.argv) not in (2, 3):
    sys.exit('usage: python docs/figures/make_shapes_figures.py WORKDIR [SUFFIX] '
             '(e.g. runs/shapes; runs/shapes_refinenet _refinenet)')
  main(*sys.argv[1:])
