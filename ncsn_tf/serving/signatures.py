"""The served signatures: each one `Signature` entry in one ordered registry.

An entry says everything the export needs to serve a signature and the docs
need to describe it:

* `name`: the SavedModel signature key, also the ScoreModule attribute that
  holds its tf.function (`module.sample`, `loaded.sample`);
* `applies(context) -> bool`: whether an export has it (`inpaint` only for
  image models, `log_likelihood` only for continuous-σ models with an SDE);
* `input_specs(context) -> [tf.TensorSpec]`: the named inputs, in the order
  `fn` takes them (the names are the signature's input keys);
* `fn(context, *inputs) -> {output name: tensor}`: the body, its input checks
  included (a loaded signature checks dtypes and known dimensions, not ranks
  or values);
* `inputs`, `outputs`, `doc`, `when`, `see`: the markdown of its row in the
  signature tables of README.md and saved_models/README.md, which
  `python -m ncsn_tf.serving.docs` writes from the registry.

The `ExportContext` is what an entry sees of the export: the run's Config, the
score model, the ladder variable, the request size cap, the data shape, the
configured sampler and the guidance (if any).

Every builtin body defends itself in the graph, before any work: a request
larger than the export's `max_batch` (--export_max_batch, stored in the
export), a non-finite input, σ <= 0, a label or level out of range, a mask
outside {0, 1} fails with InvalidArgument and a one-line message naming the
signature and the input (`_checked`, `_batch_within_cap`, `_finite`); the
adaptive solvers have a step limit (sampling/samplers/ode.py
MAX_SOLVER_STEPS). An extension's body should do the same with these helpers. ScoreModule (serving/module.py) builds one
tf.function per applicable entry, in registry order, and `serving_default` is
`score`. A new signature is one `register(Signature(...))`, from this package
or from any module imported before the export (docs/extending.md):

    def _score_norm(context, x, sigma_index):
      score = context.score_model.score_index(x, sigma_index)
      return {'score_norm': tf.norm(tf.reshape(score, [tf.shape(x)[0], -1]), axis=1)}

    signatures.register(signatures.Signature(
        name='score_norm', input_specs=lambda c: [c.x_spec(), c.sigma_index_spec()],
        fn=_score_norm, inputs='`x` float32 [N, *data_shape], `sigma_index` int32 [N]',
        outputs='`score_norm` float32 [N]', doc='‖s(x, σ_i)‖ per example.'))

Seeds: a signature that draws takes an int32 `seed` and derives stateless
seeds [seed, k] from it (sampling/configured.py's STREAMS): `sample` and
`sample_class` start from [seed, 0] and run the chain from [seed, 1]
('served'); `inpaint` and `colorize` use [seed, 2] and [seed, 3]
('served_condition'). The variables an entry's body reads (the networks', a
classifier's) are found by tracing, so an entry needs nothing else to be
restorable by a model server (see serving/module.py).
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.evaluation import likelihood as likelihood_eval
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import guidance as guidance_lib

#: The signature that `serving_default` repeats.
SERVING_DEFAULT = 'score'


@dataclasses.dataclass(frozen=True, eq=False)
class Guidance:
  """How `sample_class` guides: kind 'classifier' (with its guidance.Classifier)
  or 'free' (a class-conditional network), over labels in [0, num_classes)."""
  kind: str
  classifier: object | None
  num_classes: int


def guidance_for(score_model, classifier) -> Guidance | None:
  """The guidance an export offers: by `classifier` if given, else classifier-free
  when the network takes labels, else None."""
  if classifier is not None:
    return Guidance('classifier', classifier, int(classifier.num_classes))
  if score_model.num_classes:
    return Guidance('free', None, int(score_model.num_classes))
  return None


@dataclasses.dataclass(frozen=True, eq=False)
class ExportContext:
  """What a signature entry sees of the export.

  config: the run's Config. score_model: a ScoreModel (ladder or
  continuous-σ network). sigmas: the module's ladder variable, float32 [L].
  max_batch: the module's int32 variable, the most examples a request may ask
  for (None: no cap, for a module built by hand).
  data_shape: the data's shape without the batch axis ([2] for the toys,
  [H, W, C] for images). sampler: the run's configured sampler over
  score_model. guidance: a Guidance, or None when there is no way to guide.
  """
  config: config_lib.Config
  score_model: object
  sigmas: tf.Variable
  data_shape: tuple
  sampler: configured.ConfiguredSampler
  guidance: Guidance | None = None
  max_batch: tf.Variable | None = None

  @property
  def is_image(self) -> bool:
    return not self.config.data.is_toy

  @property
  def in_logits(self) -> bool:
    """Whether the model works on logits of the images (--logit_transform)."""
    return self.config.data.logit_transform

  def x_spec(self, name: str = 'x') -> tf.TensorSpec:
    """float32 [None, *data_shape] named `name`."""
    return tf.TensorSpec([None, *self.data_shape], tf.float32, name=name)

  @staticmethod
  def sigma_index_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None], tf.int32, name='sigma_index')

  @staticmethod
  def seed_spec() -> tf.TensorSpec:
    return tf.TensorSpec([], tf.int32, name='seed')


def always(context: ExportContext) -> bool:
  """`applies` of a signature every export has."""
  del context
  return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signature:
  """One served signature, everything about it in one place (see the module docstring).

  when: the table's qualifier ('image models'), empty for every export.
  see: a page of the repository (e.g. 'docs/controllable.md') the table links.
  """
  name: str
  input_specs: Callable[[ExportContext], list]
  fn: Callable[..., dict]
  inputs: str
  outputs: str
  doc: str
  applies: Callable[[ExportContext], bool] = always
  when: str = ''
  see: str = ''


# Names a signature may not take: the default signature's key, and the
# attributes of the exported module (ScoreModule sets each signature as an
# attribute of its name, beside these).
_RESERVED = frozenset({'serving_default', 'sigmas', 'config_json', 'sampler', 'model_variables',
                       'context', 'signatures', 'signature_names', 'max_batch'}
                      ) | frozenset(dir(tf.Module))

_SIGNATURES: dict[str, Signature] = {}


def register(signature: Signature) -> Signature:
  """Adds `signature` after those registered before it (new names only); returns it."""
  name = signature.name
  if not name.isidentifier() or name.startswith('_') or name in _RESERVED:
    raise ValueError(f'{name!r} cannot name a signature: it must be a Python identifier, not '
                     f'starting with "_", and none of {sorted(_RESERVED - set(dir(tf.Module)))}')
  if name in _SIGNATURES:
    raise ValueError(f'a signature named {name!r} is already registered')
  if '\n' in signature.doc:
    raise ValueError(f'signature {name!r}: doc must be one line (a table cell)')
  _SIGNATURES[name] = signature
  return signature


def unregister(name: str) -> Signature:
  """Removes the extension signature `name` (e.g. at a test's end); returns it.

  The builtin signatures stay: every export serves them where they apply.
  """
  if name in _BUILTINS:
    raise ValueError(f'{name!r} is a builtin signature; only extensions can be unregistered')
  return _SIGNATURES.pop(get_signature(name).name)


def names() -> tuple:
  """The registered signatures' names, in registration order."""
  return tuple(_SIGNATURES)


def get_signature(name: str) -> Signature:
  if name not in _SIGNATURES:
    raise ValueError(f'unknown signature {name!r}; choose from {list(_SIGNATURES)}')
  return _SIGNATURES[name]


def check_names(chosen) -> None:
  """ConfigError naming --export_signatures unless every name in `chosen` is registered."""
  unknown = [name for name in chosen if name not in _SIGNATURES]
  if unknown:
    raise config_lib.ConfigError(f'--export_signatures: unknown signature {unknown[0]!r}; '
                                 f'choose from {",".join(_SIGNATURES)}')


def applicable(context: ExportContext) -> list:
  """The signatures an export of `context` has, in registration order.

  Those whose `applies` holds, or with --export_signatures the ones it names
  (and `score`, the default): a named one that does not apply to the run is a
  ConfigError, so an export never silently lacks what was asked for.
  """
  entries = [s for s in _SIGNATURES.values() if s.applies(context)]
  chosen = context.config.export.signature_names
  if not chosen:
    return entries
  check_names(chosen)
  served = {s.name for s in entries}
  missing = [name for name in chosen if name not in served]
  if missing:
    raise config_lib.ConfigError(
        f'--export_signatures: {missing[0]!r} does not apply to this run; it can serve '
        f'{",".join(s.name for s in entries)}')
  return [s for s in entries if s.name in chosen or s.name == SERVING_DEFAULT]


# --- helpers of the builtin bodies ----------------------------------------------

def _checked(value, checks):
  """`value`, computed only after the assertion ops `checks` pass."""
  with tf.control_dependencies(checks):
    return tf.identity(value)


def _same_batch(a, b, message):
  return tf.debugging.assert_equal(tf.shape(a)[0], tf.shape(b)[0], message=message)


def _batch_within_cap(context: ExportContext, count, what: str):
  """An assertion that 1 <= count <= the export's max_batch; the message names `what`
  ('sample: num_samples') and both numbers, on one line."""
  count = tf.cast(count, tf.int32)
  if context.max_batch is None:
    return tf.debugging.assert_positive(count, message=f'{what} must be >= 1')
  cap = tf.convert_to_tensor(context.max_batch)
  message = tf.strings.format(
      what + ' must be in [1, {}] (max_batch of this export: --export_max_batch), got {}',
      (cap, count))
  return tf.debugging.Assert(tf.logical_and(count >= 1, count <= cap), [message])


def _finite(x, what: str):
  """x, checked (InvalidArgument when run) to hold no NaN or infinity."""
  return tf.debugging.check_numerics(x, f'{what} must be finite')


def _clipped(context: ExportContext, samples):
  """Samples clipped to the images' range [0, 1]; toys and logits as they are."""
  if context.is_image and not context.in_logits:
    return tf.clip_by_value(samples, 0.0, 1.0)
  return samples


def _in_data_range(context: ExportContext, images, name):
  """images, checked (when run, before any sampling) to lie in [0, 1] unless the model
  works in logits."""
  if context.in_logits:
    return images
  message = f'{name}: images must be in [0, 1]'
  return _checked(images, [tf.debugging.assert_greater_equal(images, 0.0, message=message),
                           tf.debugging.assert_less_equal(images, 1.0, message=message)])


def _draw_under(context: ExportContext, condition, seed):
  """Samples [N, *data_shape] with the configured sampler under `condition`: starting
  points from [seed, 2], the chain from [seed, 3] (the stream 'served_condition')."""
  samples, _, _ = context.sampler.sample(tf.shape(condition.known)[0], seed,
                                         stream='served_condition', condition=condition)
  return _clipped(context, samples)


def _draw(context: ExportContext, sampler, num, seed):
  """`num` samples [num, *data_shape] of `sampler`: starting points from [seed, 0], the
  chain from [seed, 1] (the stream 'served')."""
  samples, _, _ = sampler.sample(num, seed, stream='served')
  return _clipped(context, samples)


# --- the builtin signatures, in the tables' order ---------------------------------

def _score(context, x, sigma_index):
  # A loaded signature checks dtypes and known dims, not the rank: check here.
  x = _finite(tf.ensure_shape(x, [None, *context.data_shape], name='check_x_shape'), 'score: x')
  sigma_index = tf.ensure_shape(sigma_index, [None], name='check_sigma_index_shape')
  num_levels = tf.shape(context.sigmas, out_type=tf.int32)[0]
  checks = [
      _batch_within_cap(context, tf.shape(x)[0], 'score: the batch of x'),
      _same_batch(x, sigma_index, 'score: x and sigma_index need the same batch size'),
      tf.debugging.assert_non_negative(sigma_index, message='score: sigma_index must be >= 0'),
      tf.debugging.assert_less(sigma_index, num_levels,
                               message='score: sigma_index must be < the number of noise levels')]
  with tf.control_dependencies(checks):
    return {'score': context.score_model.score_index(x, sigma_index)}


register(Signature(
    name='score', fn=_score,
    input_specs=lambda c: [c.x_spec(), c.sigma_index_spec()],
    inputs='`x` float32 [N, *data_shape], `sigma_index` int32 [N]',
    outputs='`score` float32 [N, *data_shape]',
    doc='The score at ladder level σ_i (index 0 is the largest σ).'))


def _score_sigma(context, x, sigma):
  x = _finite(tf.ensure_shape(x, [None, *context.data_shape], name='check_x_shape'),
              'score_sigma: x')
  sigma = _finite(tf.ensure_shape(sigma, [None], name='check_sigma_shape'), 'score_sigma: sigma')
  checks = [_batch_within_cap(context, tf.shape(x)[0], 'score_sigma: the batch of x'),
            _same_batch(x, sigma, 'score_sigma: x and sigma need the same batch size'),
            tf.debugging.assert_positive(sigma, message='score_sigma: sigma must be > 0')]
  with tf.control_dependencies(checks):
    return {'score': context.score_model.score_sigma(x, sigma)}


register(Signature(
    name='score_sigma', fn=_score_sigma,
    input_specs=lambda c: [c.x_spec(), tf.TensorSpec([None], tf.float32, name='sigma')],
    inputs='`x` float32 [N, *data_shape], `sigma` float32 [N]',
    outputs='`score` float32 [N, *data_shape]',
    doc='The score at σ itself: any σ > 0 for a continuous-σ model, the ladder\'s levels '
        'otherwise.'))


def _sample(context, num_samples, seed):
  num_samples = _checked(num_samples, [
      _batch_within_cap(context, num_samples, 'sample: num_samples')])
  return {'samples': _draw(context, context.sampler, num_samples, seed)}


register(Signature(
    name='sample', fn=_sample,
    input_specs=lambda c: [tf.TensorSpec([], tf.int32, name='num_samples'), c.seed_spec()],
    inputs='`num_samples` int32 [], `seed` int32 []',
    outputs='`samples` float32 [num_samples, *data_shape]',
    doc='Samples drawn with the run\'s `--sampler` and its settings, deterministic in `seed`.'))


def _inpaint(context, images, mask, seed):
  images = _finite(tf.ensure_shape(images, [None, *context.data_shape], name='check_images_shape'),
                   'inpaint: images')
  mask = tf.ensure_shape(mask, [None, *context.data_shape], name='check_mask_shape')
  with tf.control_dependencies([
      _batch_within_cap(context, tf.shape(images)[0], 'inpaint: the batch of images'),
      tf.debugging.assert_equal(tf.shape(images), tf.shape(mask),
                                message='inpaint: images and mask need the same shape'),
      tf.debugging.assert_equal(mask * (1.0 - mask), tf.zeros_like(mask),
                                message='inpaint: mask must be 0 (unknown) or 1 (known)')]):
    images = _in_data_range(context, images, 'inpaint')
  return {'inpainted': _draw_under(context, conditions.inpainting(images, mask), seed)}


register(Signature(
    name='inpaint', fn=_inpaint, applies=lambda c: c.is_image, when='image models',
    input_specs=lambda c: [c.x_spec('images'), c.x_spec('mask'), c.seed_spec()],
    inputs='`images` float32 [N, *data_shape] in [0, 1], `mask` float32 [N, *data_shape] '
           '(1 = known), `seed` int32 []',
    outputs='`inpainted` float32 [N, *data_shape]',
    doc='Keeps the known pixels and completes the rest with the run\'s `--sampler`.'))


def _colorize(context, images, seed):
  images = _finite(tf.ensure_shape(images, [None, *context.data_shape[:-1], None],
                                   name='check_images_shape'), 'colorize: images')
  channels = tf.shape(images)[-1]
  with tf.control_dependencies([
      _batch_within_cap(context, tf.shape(images)[0], 'colorize: the batch of images'),
      tf.debugging.Assert(tf.logical_or(tf.equal(channels, 1), tf.equal(channels, 3)),
                          ['colorize: images need 1 (grey) or 3 (RGB) channels, got', channels])]):
    images = _in_data_range(context, images, 'colorize')
  return {'colorized': _draw_under(context, conditions.colorization(images), seed)}


register(Signature(
    name='colorize', fn=_colorize,
    applies=lambda c: (c.is_image and c.data_shape[-1] == conditions.ColourTransform.channels
                       and not c.in_logits),
    when='RGB image models, not `--logit_transform`',
    # One spec for grey and RGB inputs: the channel axis is left open and checked when run.
    input_specs=lambda c: [tf.TensorSpec([None, *c.data_shape[:-1], None], tf.float32,
                                         name='images'), c.seed_spec()],
    inputs='`images` float32 [N, H, W, C] in [0, 1], C = 1 (grey) or 3 (RGB), `seed` int32 []',
    outputs='`colorized` float32 [N, H, W, 3]',
    doc='Keeps the grey axis of every pixel and generates the colour with the run\'s '
        '`--sampler`.'))


def _log_likelihood(context, x, seed):
  cfg = context.config
  x = _finite(tf.ensure_shape(x, [None, *context.data_shape], name='check_x_shape'),
              'log_likelihood: x')
  checks = [_batch_within_cap(context, tf.shape(x)[0], 'log_likelihood: the batch of x')]
  if context.is_image and not context.in_logits:
    message = 'log_likelihood: images must be in [0, 1)'
    checks += [tf.debugging.assert_greater_equal(x, 0.0, message=message),
               tf.debugging.assert_less(x, 1.0, message=message)]
  x = _checked(x, checks)
  log_prob, stderr, nfe = likelihood_eval.model_log_prob(cfg, context.score_model, x,
                                                         tf.stack([seed, tf.constant(0)]))
  if context.is_image:
    bpd = likelihood_eval.image_bits_per_dim(cfg, log_prob, x)
  else:
    bpd = -log_prob / (int(np.prod(context.data_shape)) * np.log(2.0))
  return {'log_prob': log_prob, 'log_prob_stderr': stderr,
          'bits_per_dim': tf.cast(bpd, tf.float32), 'nfe': tf.cast(nfe, tf.int32)}


register(Signature(
    name='log_likelihood', fn=_log_likelihood, when='continuous-σ models',
    applies=lambda c: (c.score_model.is_continuous
                       and noise.build_sde(c.config.model) is not None),
    input_specs=lambda c: [c.x_spec(), c.seed_spec()],
    inputs='`x` float32 [N, *data_shape], `seed` int32 []',
    outputs='`log_prob` float32 [N], `log_prob_stderr` float32 [N], `bits_per_dim` float32 [N], '
            '`nfe` int32 []',
    doc='log p(x) by the probability-flow ODE at the run\'s `--ode_rtol` and `--ode_atol`; '
        'the exact divergence on toys, else `--hutchinson_probes` probes, whose spread gives '
        '`log_prob_stderr`.'))


def _sample_class(context, labels, guidance_scale, seed):
  guidance = context.guidance
  labels = tf.ensure_shape(labels, [None], name='check_labels_shape')
  guidance_scale = _finite(guidance_scale, 'sample_class: guidance_scale')
  labels = _checked(labels, [
      _batch_within_cap(context, tf.shape(labels)[0], 'sample_class: the number of labels'),
      tf.debugging.assert_non_negative(labels, message='sample_class: labels must be >= 0'),
      tf.debugging.assert_less(labels, guidance.num_classes,
                               message=f'sample_class: labels must be < {guidance.num_classes}'),
      tf.debugging.assert_non_negative(guidance_scale,
                                       message='sample_class: guidance_scale must be >= 0')])
  guided = guidance_lib.guided_score_model(guidance.kind, context.score_model, labels,
                                           guidance_scale, classifier=guidance.classifier)
  sampler = configured.ConfiguredSampler(context.config, guided, context.data_shape)
  # The seeds of `sample`: one sample per label.
  return {'samples': _draw(context, sampler, tf.shape(labels)[0], seed)}


register(Signature(
    name='sample_class', fn=_sample_class, applies=lambda c: c.guidance is not None,
    when='class-conditional models, or `--guidance=classifier`',
    input_specs=lambda c: [tf.TensorSpec([None], tf.int32, name='labels'),
                           tf.TensorSpec([], tf.float32, name='guidance_scale'), c.seed_spec()],
    inputs='`labels` int32 [N], `guidance_scale` float32 [], `seed` int32 []',
    outputs='`samples` float32 [N, *data_shape]',
    doc='One sample per label, guided at scale w = `guidance_scale` (classifier or '
        'classifier-free guidance).',
    see='docs/controllable.md'))


#: The signatures registered above, which `unregister` keeps.
_BUILTINS = frozenset(_SIGNATURES)
