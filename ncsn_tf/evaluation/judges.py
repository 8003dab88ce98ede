"""The clean judges of samples: each dataset's row in ncsn_tf/catalog.py names its judge.

shape_fit (shapes): how many sample objects are clean discs, squares or
triangles (metrics/shape_fit.py). digit_judge (digits): a classifier fitted on
the clean training digits only gives the class share, an Inception-Score
analogue, a Fréchet distance and nearest-training-image distances
(metrics/digit_judge.py). Datasets without a judge get none.
"""

import os

from absl import logging

from ncsn_tf import catalog
from ncsn_tf import config as config_lib
from ncsn_tf.data import digits
from ncsn_tf.data import shapes
from ncsn_tf.metrics import digit_judge
from ncsn_tf.metrics import shape_fit
from ncsn_tf.runtime import artifacts


def write_digit_judgement(images, labels, config: config_lib.Config, out_dir: str) -> dict:
  """Digits only: the clean classifier's verdict on samples (ncsn_tf/metrics/digit_judge.py).

  images: float [N, S, S, 1] in [0, 1]; labels: the requested classes int [N],
  or None for unconditional samples. Writes <out_dir>/digit_judgement.json.
  """
  return digit_judge.write_judgement(images, labels, config.data.image_size, out_dir,
                                     seed=config.seed)


def write_shape_fit(images, image_size: int, out_dir: str) -> dict:
  """Shapes only: how many sample objects are a clean disc, square or triangle.

  Compares the samples (float [N, S, S, 3] in [0, 1]) with as many test images
  (at most 256) by ncsn_tf.metrics.shape_fit (also how much of the images the
  objects cover and how many backgrounds are light); writes
  <out_dir>/shape_fit.json and logs two lines. Returns the JSON's dict.
  """
  reference = shapes.shapes_split_images('test', image_size=image_size,
                                         num_images=min(len(images), 256)) / 255.0
  result = {'iou_threshold': shape_fit.IOU_THRESHOLD, 'samples': shape_fit.shape_fit(images),
            'test_images': shape_fit.shape_fit(reference)}
  ours, data = result['samples'], result['test_images']
  logging.info('shape fit: %.0f%% ± %.0f%% of %d sample objects are a disc, square or '
               'triangle (IoU >= %g; %d empty samples); %.0f%% of %d objects in as many '
               'test images', 100 * ours['fit_rate'], 100 * ours['fit_rate_stderr'],
               ours['objects'], shape_fit.IOU_THRESHOLD, ours['empty_images'],
               100 * data['fit_rate'], data['objects'])
  logging.info('shape fit: objects cover %.1f%% of the samples (%.1f%% of the test images); '
               '%.0f%% of the samples have a light background (%.0f%% of the test images)',
               100 * ours['foreground_fraction'], 100 * data['foreground_fraction'],
               100 * ours['light_backgrounds'], 100 * data['light_backgrounds'])
  for summary in (ours, data):  # No objects at all gives NaN; JSON gets null, not NaN.
    for key in ('fit_rate', 'fit_rate_stderr', 'median_iou', 'foreground_fraction',
                'light_backgrounds'):
      summary[key] = artifacts.json_floats([summary[key]])[0]
  artifacts.write_json(os.path.join(out_dir, 'shape_fit.json'), result)
  return result


def judge_samples(images, labels, config: config_lib.Config, out_dir: str) -> dict | None:
  """The dataset's judge on samples, written to `out_dir`; None if the dataset has none.

  images: float [N, S, S, C] in [0, 1]; labels: the requested classes int [N]
  (guided samples; digit_judge uses them), or None.
  """
  judge = catalog.get(config.data.dataset).judge
  if judge == 'shape_fit':
    return write_shape_fit(images, config.data.image_size, out_dir)
  if judge == 'digit_judge':
    return write_digit_judgement(images, labels, config, out_dir)
  return None


def judge_scores(images, config: config_lib.Config) -> dict | None:
  """The dataset judge's headline numbers for images float [N, S, S, C] in [0, 1], no files.

  digits: {'inception_score', 'frechet_distance'} (metrics/digit_judge.py,
  against the test digits; the Fréchet estimate depends on N, so compare
  equal counts); shapes: {'fit_rate', 'fit_rate_stderr', 'objects',
  'empty_images'} (metrics/shape_fit.py). None for a dataset without a judge.
  """
  judge = catalog.get(config.data.dataset).judge
  if judge == 'shape_fit':
    fit = shape_fit.shape_fit(images)
    return {key: fit[key] for key in ('fit_rate', 'fit_rate_stderr', 'objects', 'empty_images')}
  if judge == 'digit_judge':
    size = config.data.image_size
    classifier = digit_judge.fitted_classifier(size, config.seed)
    train_images, _ = digits.load_digits_split('train', size)
    test_images, _ = digits.load_digits_split('test', size)
    result = digit_judge.judge(classifier, images, train_images=train_images / 255.0,
                               reference_images=test_images / 255.0)
    return {key: result[key] for key in ('inception_score', 'frechet_distance')}
  return None
