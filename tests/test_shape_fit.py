"""ncsn_tf.metrics.shape_fit against shapes drawn from their own formulas."""

import numpy as np
import pytest

from ncsn_tf.data import shapes
from ncsn_tf.metrics import shape_fit

SIZE = 32
DARK = (0.1, 0.05, 0.15)
LIGHT = (0.9, 0.95, 0.85)


def _canvas(background):
  return np.broadcast_to(np.float32(background), (SIZE, SIZE, 3)).copy()


def _grid():
  # Pixel centres at 0.5, 1.5, ... as in ncsn_tf.data.shapes.
  y, x = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5, indexing='ij')
  return y, x


def _disc(cy, cx, radius):
  y, x = _grid()
  return (y - cy)**2 + (x - cx)**2 <= radius**2


def _square(cy, cx, half_side):
  y, x = _grid()
  return (np.abs(y - cy) <= half_side) & (np.abs(x - cx) <= half_side)


def _triangle(cy, cx, circumradius):
  """Upright equilateral triangle (apex up) by the same-side test on its vertices."""
  y, x = _grid()
  r = circumradius
  vertices = [(cx, cy - r), (cx - r * np.sqrt(3) / 2, cy + r / 2), (cx + r * np.sqrt(3) / 2, cy + r / 2)]
  signs = []
  for (x1, y1), (x2, y2) in zip(vertices, vertices[1:] + vertices[:1]):
    signs.append((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1))
  signs = np.stack(signs)
  return np.all(signs >= 0, 0) | np.all(signs <= 0, 0)


def _paint(image, mask, colour):
  image[mask] = colour
  return image


def test_components_are_four_connected_and_follow_winding_paths():
  mask = np.zeros((6, 7), bool)
  mask[1:5, 1] = mask[4, 1:4] = mask[1:5, 3] = True  # A U: its arms meet only at the bottom.
  mask[0, 5] = mask[1, 6] = True  # Touching by a corner only: two components.
  labels = shape_fit.components(mask)
  assert labels.max() == 3
  assert len(np.unique(labels[1:5, 1])) == 1 and labels[1, 1] == labels[1, 3]
  assert labels[0, 5] != labels[1, 6]
  assert (labels > 0).sum() == mask.sum() and np.all(labels[~mask] == 0)


@pytest.mark.parametrize('background', [DARK, LIGHT])
def test_each_kind_is_fitted_and_named(background):
  # Off-grid centres and sizes; each drawn by its own formula, not the template's.
  image = _canvas(background)
  _paint(image, _disc(8.3, 8.9, 5.6), (0.9, 0.1, 0.2))
  _paint(image, _square(9.2, 23.6, 4.4), (0.1, 0.7, 0.2))
  _paint(image, _triangle(22.7, 15.4, 7.3), (0.2, 0.3, 0.95))
  fits = shape_fit.object_fits(image)
  assert [kind for _, kind in fits] == [0, 1, 2]  # Raster order: disc, square, triangle.
  # Pixel-rounding of a ~10 px shape costs a few % of IoU; a different kind costs 15-25%.
  assert min(iou for iou, _ in fits) > 0.9, fits
  summary = shape_fit.shape_fit(image[None])
  assert summary['fit_rate'] == 1.0 and summary['objects'] == 3
  assert summary['fitted_kinds'] == {'disc': 1, 'square': 1, 'triangle': 1}


def test_merged_and_irregular_objects_do_not_fit():
  image = _canvas(DARK)
  # Two overlapping discs of different colours make one object.
  _paint(image, _disc(10, 10, 5), (0.9, 0.2, 0.2))
  _paint(image, _disc(13, 16, 5), (0.2, 0.9, 0.2))
  # An L, a rectangle of aspect 3 and a specks-only corner.
  l_shape = _square(25, 8, 4) & ~((np.arange(SIZE)[:, None] < 27) & (np.arange(SIZE)[None] > 6))
  _paint(image, l_shape, (0.9, 0.9, 0.2))
  _paint(image, _square(25, 24, 5) & (np.abs(np.arange(SIZE)[:, None] + 0.5 - 25) <= 1.7),
         (0.2, 0.8, 0.9))
  _paint(image, _disc(2, 29, 1.2), (1.0, 1.0, 1.0))
  fits = shape_fit.object_fits(image)
  assert len(fits) == 3, fits  # The speck (< 10 px) is not an object.
  assert max(iou for iou, _ in fits) < 0.85, fits
  assert shape_fit.shape_fit(image[None])['fit_rate'] == 0.0


def test_objects_outside_the_datas_sizes_and_noise_do_not_fit():
  # A disc of radius 0.45 S is a disc, but bigger than any shape in the data
  # (at most 0.26 S); a diverged sampler's saturated noise is no shape either.
  big = _paint(_canvas(DARK), _disc(16, 16, 14.5), (0.9, 0.2, 0.2))
  noise = (np.random.default_rng(1).random((SIZE, SIZE, 3)) > 0.5).astype(np.float32)
  # The largest template (half-size 0.26 S x 1.25) covers about half of the disc.
  assert [iou < 0.6 for iou, _ in shape_fit.object_fits(big)] == [True]
  summary = shape_fit.shape_fit(noise[None])
  assert summary['objects'] >= 1 and summary['fit_rate'] == 0.0, summary


def test_an_image_without_objects_counts_as_empty():
  flat = _canvas(LIGHT)[None]
  noisy = np.clip(flat + np.random.default_rng(0).uniform(-0.1, 0.1, flat.shape), 0, 1)
  summary = shape_fit.shape_fit(np.concatenate([flat, noisy]))
  assert summary['empty_images'] == 2 and summary['objects'] == 0
  assert np.isnan(summary['fit_rate']) and np.isnan(summary['median_iou'])


def test_training_images_fit_unless_their_shapes_overlap():
  # The reference rate for samples: most objects in the data fit, all three
  # kinds about equally; the rest are overlapping shapes merged into one object.
  images = shapes.shapes_split_images('test', num_images=64) / 255.0
  summary = shape_fit.shape_fit(images)
  assert summary['empty_images'] == 0
  assert 0.6 < summary['fit_rate'] < 0.9, summary
  assert summary['median_iou'] > 0.95
  fitted = summary['fitted_kinds']
  assert min(fitted.values()) > 0.2 * sum(fitted.values()), fitted


def test_fit_rate_stderr_is_the_binomial_error_with_one_object_per_image():
  # One object per image: the images' ratio variance reduces to R(1 − R)/(m − 1).
  fitted = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], np.float64)
  rate = fitted.mean()
  assert shape_fit.fit_rate_stderr(np.ones(10), fitted) == pytest.approx(
      np.sqrt(rate * (1 - rate) / 9), rel=1e-12)
  assert np.isnan(shape_fit.fit_rate_stderr([3], [1]))  # One image: no spread.
  assert np.isnan(shape_fit.fit_rate_stderr([0, 0], [0, 0]))


def test_fit_rate_stderr_matches_a_bootstrap_over_images():
  # Images with 1-3 objects whose fits go together (a whole image fits or fails
  # more often than chance): the error must follow the images, not the objects.
  rng = np.random.default_rng(5)
  objects = rng.integers(1, 4, 400).astype(np.float64)
  good = rng.random(400) < 0.4
  fitted = np.where(good, objects, rng.binomial(objects.astype(int), 0.1)).astype(np.float64)
  stderr = shape_fit.fit_rate_stderr(objects, fitted)
  draws = rng.integers(0, 400, (4000, 400))  # Resampled images.
  rates = fitted[draws].sum(1) / objects[draws].sum(1)
  # 4000 bootstrap draws estimate a standard deviation to about 1/√8000 = 1.1%;
  # the delta method and the bootstrap agree to O(1/m) besides.
  assert stderr == pytest.approx(rates.std(), rel=0.06)
  # Counting objects as independent would understate it here.
  rate = fitted.sum() / objects.sum()
  assert np.sqrt(rate * (1 - rate) / objects.sum()) < 0.8 * stderr


def test_no_images_give_an_empty_summary_not_an_error():
  summary = shape_fit.shape_fit(np.zeros((0, 16, 16, 3), np.float32))
  assert summary['objects'] == 0 and summary['empty_images'] == 0
  assert np.isnan(summary['fit_rate']) and np.isnan(summary['fit_rate_stderr'])


def test_bad_input_is_rejected():
  with pytest.raises(ValueError, match=r'\[N, S, S, 3\]'):
    shape_fit.shape_fit(np.zeros((2, 8, 8)))


def test_sample_mode_writes_the_fit_of_the_samples_beside_the_data(tmp_path):
  import json

  from ncsn_tf.evaluation import judges
  images = shapes.shapes_split_images('test', image_size=16, num_images=6) / 255.0
  flat = np.concatenate([_canvas(DARK)[None, :16, :16]] * 3)
  judges.write_shape_fit(np.concatenate([images, flat]), 16, str(tmp_path))
  with open(tmp_path / 'shape_fit.json') as f:
    written = json.load(f)
  # The data reference is as many test images as samples: the first 6 of them
  # are the samples' first 6.
  assert written['test_images']['objects'] >= written['samples']['objects'] > 0
  assert written['samples']['empty_images'] == 3 and written['iou_threshold'] == 0.85
  assert 0 <= written['samples']['fit_rate_stderr'] < 0.5
  judges.write_shape_fit(flat, 16, str(tmp_path))
  with open(tmp_path / 'shape_fit.json') as f:
    empty = json.load(f)['samples']
  assert empty['fit_rate'] is None and empty['fit_rate_stderr'] is None  # null, not NaN.
  # Flat dark squares: no foreground, no light background.
  assert empty['foreground_fraction'] == 0.0 and empty['light_backgrounds'] == 0.0


def test_foreground_fraction_is_the_share_of_object_pixels():
  image = _paint(_canvas(LIGHT), _square(10.0, 12.0, 4.0), (0.1, 0.2, 0.9))
  flat = _canvas(DARK)
  summary = shape_fit.shape_fit(np.stack([image, flat]))
  # The square covers 8 x 8 pixel centres; the flat image none.
  assert summary['foreground_fraction'] == pytest.approx((64 / SIZE**2 + 0.0) / 2)
  assert np.isnan(shape_fit.shape_fit(np.zeros((0, 8, 8, 3)))['foreground_fraction'])


def test_light_backgrounds_match_the_generators_own_backgrounds():
  # Against the generator's drawn background colours, not the images: with
  # light and dark equally likely, the share must equal the generator's count.
  num = 128
  params = shapes._draw_parameters(np.random.default_rng(3), num, SIZE)  # pylint: disable=protected-access
  truth = params['background'].mean(-1) > shape_fit.LIGHT_THRESHOLD
  images = shapes.shapes_images(num, SIZE, seed=3) / 255.0
  summary = shape_fit.shape_fit(images)
  assert summary['light_backgrounds'] == pytest.approx(truth.mean())
  assert 0.4 < truth.mean() < 0.6
  assert shape_fit.shape_fit(np.stack([_canvas(LIGHT)] * 3 + [_canvas(DARK)]))[
      'light_backgrounds'] == pytest.approx(0.75)
