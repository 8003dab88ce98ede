"""TODO docstring (from ncsn_tf.export)."""

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.evaluation import likelihood as likelihood_eval
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import guidance

#: Annealed Langevin's uniform starting points (kept here under its old name).
initial_state = configured.uniform_initial_state


class ScoreModule(tf.Module):
  """The exported module; build with the (EMA) score model and the Config.

  score_model: a ScoreModel (TrainState.score_model) or a ladder network
  s(x, sigma_index), which is wrapped with `sigmas`.
  classifier: None, or a guidance.Classifier: `sample_class` then uses
  classifier guidance, and its variables are saved with the score model's.
  """

  def __init__(self, score_model, config: config_lib.Config, sigmas: np.ndarray,
               classifier=None):
    super().__init__(name='ncsn')
    # Not tracked: a tracked Keras 3 model adds its own single-input serving
    # function, which this model cannot trace, and its variables would be saved
    # under the Keras wrappers' names (see the module docstring).
    score_model = configured.as_score_model(score_model, sigmas)
    self.__dict__['score_model'] = score_model
    self.sigmas = tf.Variable(np.asarray(sigmas, np.float32), trainable=False, name='sigmas')
    self.config_json = tf.Variable(config.to_json(), trainable=False, name='config_json')
    self.sampler = tf.Variable(configured.describe(config.sampling), trainable=False,
                               name='sampler')
    self._config = config
    self._shape = tuple(data_lib.data_shape(config.data))
    self.__dict__['_sampler'] = configured.ConfiguredSampler(config, score_model, self._shape)
    x_spec = tf.TensorSpec([None, *self._shape], tf.float32, name='x')
    index_spec = tf.TensorSpec([None], tf.int32, name='sigma_index')
    self.score = tf.function(self._score, input_signature=[x_spec, index_spec])
    self.score_sigma = tf.function(self._score_sigma, input_signature=[
        x_spec, tf.TensorSpec([None], tf.float32, name='sigma')])
    if score_model.is_continuous and noise.build_sde(config.model) is not None:
      self.log_likelihood = tf.function(self._log_likelihood, input_signature=[
          x_spec, tf.TensorSpec([], tf.int32, name='seed')])
    self.sample = tf.function(self._sample, input_signature=[
        tf.TensorSpec([], tf.int32, name='num_samples'), tf.TensorSpec([], tf.int32, name='seed')])
    if not config.data.is_toy:
      self.inpaint = tf.function(self._inpaint, input_signature=[
          tf.TensorSpec([None, *self._shape], tf.float32, name='images'),
          tf.TensorSpec([None, *self._shape], tf.float32, name='mask'),
          tf.TensorSpec([], tf.int32, name='seed')])
    if (not config.data.is_toy and self._shape[-1] == conditions.ColourTransform.channels
        and not config.data.logit_transform):
      # One spec for grey and RGB inputs: the channel axis is left open and checked when run.
      self.colorize = tf.function(self._colorize, input_signature=[
          tf.TensorSpec([None, *self._shape[:-1], None], tf.float32, name='images'),
          tf.TensorSpec([], tf.int32, name='seed')])
    self._add_sample_class(score_model, classifier)
    self.model_variables = _track_captured_variables(self.signatures().values())

  def _add_sample_class(self, score_model, classifier):
    """`sample_class` when there is a way to guide: a classifier, or labels the network takes."""
    kind = 'classifier' if classifier is not None else (
        'free' if score_model.num_classes else None)
    if kind is None:
      return
    # Not tracked (as score_model): its variables are collected from the trace.
    self.__dict__['_guidance'] = (kind, classifier)
    self._num_classes = int(classifier.num_classes if classifier is not None
                            else score_model.num_classes)
    self.sample_class = tf.function(self._sample_class, input_signature=[
        tf.TensorSpec([None], tf.int32, name='labels'),
        tf.TensorSpec([], tf.float32, name='guidance_scale'),
        tf.TensorSpec([], tf.int32, name='seed')])

  def _sample_class(self, labels, guidance_scale, seed):
    cfg = self._config
    labels = tf.ensure_shape(labels, [None], name='check_labels_shape')
    checks = [
        tf.debugging.assert_non_negative(labels, message='sample_class: labels must be >= 0'),
        tf.debugging.assert_less(labels, self._num_classes,
                                 message=f'sample_class: labels must be < {self._num_classes}'),
        tf.debugging.assert_non_negative(guidance_scale,
                                         message='sample_class: guidance_scale must be >= 0')]
    with tf.control_dependencies(checks):
      labels = tf.identity(labels)
    kind, classifier = self._guidance
    guided = guidance.guided_score_model(kind, self.score_model, labels, guidance_scale,
                                         classifier=classifier)
    sampler = configured.ConfiguredSampler(cfg, guided, self._shape)
    num = tf.shape(labels)[0]
    # The seeds of `sample`: starting points from [seed, 0], the chain from [seed, 1].
    x_init = sampler.initial_state(num, tf.stack([seed, tf.constant(0)]))
    samples, _, _ = sampler.run(x_init, tf.stack([seed, tf.constant(1)]))
    if not cfg.data.is_toy and not cfg.data.logit_transform:
      samples = tf.clip_by_value(samples, 0.0, 1.0)
    return {'samples': samples}

  def signatures(self) -> dict:
    out = {'score': self.score, 'score_sigma': self.score_sigma, 'sample': self.sample,
           'serving_default': self.score}
    if hasattr(self, 'log_likelihood'):
      out['log_likelihood'] = self.log_likelihood
    if hasattr(self, 'inpaint'):
      out['inpaint'] = self.inpaint
    if hasattr(self, 'colorize'):
      out['colorize'] = self.colorize
    if hasattr(self, 'sample_class'):
      out['sample_class'] = self.sample_class
    return out

  def _score(self, x, sigma_index):
    # A loaded signature checks dtypes and known dims, not the rank: check here.
    x = tf.ensure_shape(x, [None, *self._shape], name='check_x_shape')
    sigma_index = tf.ensure_shape(sigma_index, [None], name='check_sigma_index_shape')
    num_levels = tf.shape(self.sigmas, out_type=tf.int32)[0]
    checks = [
        tf.debugging.assert_equal(tf.shape(x)[0], tf.shape(sigma_index)[0],
                                  message='score: x and sigma_index need the same batch size'),
        tf.debugging.assert_non_negative(sigma_index, message='score: sigma_index must be >= 0'),
        tf.debugging.assert_less(sigma_index, num_levels,
                                 message='score: sigma_index must be < the number of noise levels')]
    with tf.control_dependencies(checks):
      return {'score': self.score_model.score_index(x, sigma_index)}

  def _score_sigma(self, x, sigma):
    x = tf.ensure_shape(x, [None, *self._shape], name='check_x_shape')
    sigma = tf.ensure_shape(sigma, [None], name='check_sigma_shape')
    checks = [
        tf.debugging.assert_equal(tf.shape(x)[0], tf.shape(sigma)[0],
                                  message='score_sigma: x and sigma need the same batch size'),
        tf.debugging.assert_positive(sigma, message='score_sigma: sigma must be > 0')]
    with tf.control_dependencies(checks):
      return {'score': self.score_model.score_sigma(x, sigma)}

  def _log_likelihood(self, x, seed):
    cfg = self._config
    x = tf.ensure_shape(x, [None, *self._shape], name='check_x_shape')
    checks = []
    if not cfg.data.is_toy and not cfg.data.logit_transform:
      checks = [tf.debugging.assert_greater_equal(x, 0.0, message='log_likelihood: images must be in [0, 1)'),
                tf.debugging.assert_less(x, 1.0, message='log_likelihood: images must be in [0, 1)')]
    with tf.control_dependencies(checks):
      x = tf.identity(x)
    log_prob, nfe = likelihood_eval.model_log_prob(cfg, self.score_model, x,
                                                   tf.stack([seed, tf.constant(0)]))
    dims = int(np.prod(self._shape))
    if cfg.data.is_toy:
      bpd = -log_prob / (dims * np.log(2.0))
    else:
      bpd = likelihood_eval.image_bits_per_dim(cfg, log_prob, x)
    return {'log_prob': log_prob, 'bits_per_dim': tf.cast(bpd, tf.float32),
            'nfe': tf.cast(nfe, tf.int32)}

  def _sample(self, num_samples, seed):
    cfg = self._config
    # Starting points from [seed, 0], the chain from [seed, 1].
    x_init = self._sampler.initial_state(num_samples, tf.stack([seed, tf.constant(0)]))
    samples, _, _ = self._sampler.run(x_init, tf.stack([seed, tf.constant(1)]))
    if not cfg.data.is_toy and not cfg.data.logit_transform:
      samples = tf.clip_by_value(samples, 0.0, 1.0)
    return {'samples': samples}

  def _in_data_range(self, images, name):
    """images, checked (when run, before any sampling) to lie in [0, 1] unless the model
    works in logits."""
    if self._config.data.logit_transform:
      return images
    message = f'{name}: images must be in [0, 1]'
    with tf.control_dependencies([tf.debugging.assert_greater_equal(images, 0.0, message=message),
                                  tf.debugging.assert_less_equal(images, 1.0, message=message)]):
      return tf.identity(images)

  def _draw_under(self, condition, seed):
    """Samples with the configured sampler under `condition`: starting points from
    [seed, 2], the chain from [seed, 3]; clipped to [0, 1] unless in logits."""
    num = tf.shape(condition.known)[0]
    x_init = self._sampler.initial_state(num, tf.stack([seed, tf.constant(2)]))
    samples, _, _ = self._sampler.run(x_init, tf.stack([seed, tf.constant(3)]), condition=condition)
    if not self._config.data.logit_transform:
      samples = tf.clip_by_value(samples, 0.0, 1.0)
    return samples

  def _inpaint(self, images, mask, seed):
    images = tf.ensure_shape(images, [None, *self._shape], name='check_images_shape')
    mask = tf.ensure_shape(mask, [None, *self._shape], name='check_mask_shape')
    with tf.control_dependencies([
        tf.debugging.assert_equal(tf.shape(images), tf.shape(mask),
                                  message='inpaint: images and mask need the same shape'),
        tf.debugging.assert_equal(mask * (1.0 - mask), tf.zeros_like(mask),
                                  message='inpaint: mask must be 0 (unknown) or 1 (known)')]):
      images = self._in_data_range(images, 'inpaint')
    return {'inpainted': self._draw_under(conditions.inpainting(images, mask), seed)}

  def _colorize(self, images, seed):
    images = tf.ensure_shape(images, [None, *self._shape[:-1], None], name='check_images_shape')
    channels = tf.shape(images)[-1]
    with tf.control_dependencies([tf.debugging.Assert(
        tf.logical_or(tf.equal(channels, 1), tf.equal(channels, 3)),
        ['colorize: images need 1 (grey) or 3 (RGB) channels, got', channels])]):
      images = self._in_data_range(images, 'colorize')
    return {'colorized': self._draw_under(conditions.colorization(images), seed)}


def _track_captured_variables(functions) -> list:
  """The variables the traced `functions` read, each once, in a stable order.

  Tracing with the input signatures happens here, so it must come after every
  signature is defined; the returned list, assigned to the module, makes the
  saver write each variable under the name its variable node has in the graph.
  """
  captured = {}
  for function in functions:
    for variable in function.get_concrete_function().variables:
      captured.setdefault(id(variable), variable)
  return list(captured.values())
