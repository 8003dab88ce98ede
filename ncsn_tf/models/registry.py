"""Score networks: `build_model(config, data_shape)` picks one from the Config;
`build_classifier(config, data_shape, num_classes)` the noise-conditional classifier."""

import keras

from ncsn_tf import config as config_lib
from ncsn_tf import losses
from ncsn_tf import noise
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.models import classifier
from ncsn_tf.models.mlp import ContinuousScoreMLP
from ncsn_tf.models.mlp import NoiseConditionalMLP
from ncsn_tf.models.mlp import ScoreMLP
from ncsn_tf.models.refinenet import CondRefineNetDilated
from ncsn_tf.models.unet import ScoreUNet


def label_count(config: config_lib.Config) -> int:
  """The dataset's number of classes (ncsn_tf.data.num_classes; 0 = unlabelled)."""
  return int(data_lib.num_classes(config.data))


def build_model(config: config_lib.Config, data_shape: tuple) -> keras.Model:
  """A built noise-conditional score model -> same shape as x: s(x, sigma_index), or
  s(x, sigma) with sigma float32 [N] for --noise_embedding=fourier."""
  m = config.model
  sigmas = noise.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_scales)
  continuous = m.noise_embedding == 'fourier'
  # --class_conditional: s(x, σ, y) with a label embedding (classifier-free guidance).
  label_classes = label_count(config) if m.class_conditional else 0
  if m.name == 'mlp' and continuous:  # s(x, σ) for any σ > 0.
    return ContinuousScoreMLP(data_dim=data_shape[0], hidden_units=m.ngf,
                              num_layers=m.num_layers, label_classes=label_classes,
                              name='score_mlp_continuous').build_for()
  if m.name == 'mlp':
    if config.train.loss in losses.SINGLE_SIGMA_LOSSES:  # One σ: an unconditional s(x).
      return ScoreMLP(data_dim=data_shape[0], hidden_units=m.ngf, num_layers=m.num_layers,
                      name='score_mlp_unconditional').build_for()
    model = NoiseConditionalMLP(data_dim=data_shape[0], sigmas=sigmas.tolist(),
                                hidden_units=m.ngf, num_layers=m.num_layers,
                                scale_by_sigma=m.scale_by_sigma, name='score_mlp')
    return model.build_for()
  if m.name == 'refinenet':
    height, _, channels = data_shape
    edm = m.preconditioning == 'edm'
    model = CondRefineNetDilated(ngf=m.ngf, num_classes=m.num_scales, image_size=height,
                                 channels=channels, logit_transform=config.data.logit_transform,
                                 output_sigmas=sigmas.tolist() if m.scale_by_sigma or edm else None,
                                 conditional_norm=m.conditional_norm,
                                 sigma_data=m.sigma_data if edm else None,
                                 name='cond_refinenet_dilated')
    import numpy as np
    model(np.zeros((1,) + tuple(data_shape), np.float32), np.zeros((1,), np.int32))
    return model
  if m.name == 'unet':
    height, _, channels = data_shape
    return ScoreUNet(ngf=m.ngf, sigmas=sigmas.tolist(), image_size=height, channels=channels,
                     logit_transform=config.data.logit_transform,
                     scale_by_sigma=m.scale_by_sigma, norm=m.unet_norm,
                     sigma_data=m.sigma_data if m.preconditioning == 'edm' else None,
                     continuous=continuous, label_classes=label_classes,
                     name='score_unet').build_for()
  raise ValueError(f'unknown model {m.name!r}')


def build_classifier(config: config_lib.Config, data_shape: tuple, num_classes: int) -> keras.Model:
  """A built noise-conditional classifier (models/classifier.py): logits(x, σ) [N, num_classes].

  Images get the convolutional one, of width --ngf; flat data the MLP, of
  --ngf units and --num_layers layers.
  """
  m = config.model
  if len(data_shape) == 1:
    return classifier.NoiseConditionalMLPClassifier(
        num_classes, data_dim=data_shape[0], hidden_units=m.ngf, num_layers=m.num_layers,
        name='classifier_mlp').build_for()
  height, _, channels = data_shape
  return classifier.NoiseConditionalClassifier(
      num_classes, image_size=height, channels=channels, ngf=m.ngf,
      logit_transform=config.data.logit_transform, name='classifier').build_for()
