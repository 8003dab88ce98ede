"""`Pipeline`: a trained model in Python, one call per task (sample, score, steer, inpaint,
colourise, log-likelihood). Built by `ncsn_tf.load(path)` (pipeline/__init__.py).

Every call goes through the functions the command line and the export use:
the configured sampler (sampling/configured.py ConfiguredSampler) with its
seed table STREAMS, the guided score models (sampling/guidance.py), the
conditions (sampling/conditions.py) and the probability-flow ODE likelihood
of a run (evaluation/likelihood.py `model_log_prob`). A call draws one chain of `num` samples on the stream the
export's signatures use ('served': start [seed, 0], chain [seed, 1];
inpainting and colourisation 'served_condition': [seed, 2], [seed, 3]), so the
same call with the same seed gives the same answer from a workdir, from its
export, and from the export's own `sample` / `sample_class` / `inpaint` /
`colorize` signatures (up to float round-off). `python run.py --mode=sample`
draws many batches through sampling/draw.py, on the stream 'samples'.

Settings are the command line's flags by name (`sampling_steps=18`, `snr=0.1`,
`ode_rtol=1e-3`), parsed and checked as flags are (config/flagfile.py
`with_flags`, then the sampler registry's checks): a bad one raises the
command line's one-line ConfigError (a ValueError) naming the flag. Every
other bad argument raises a one-line ValueError naming the argument.

Arrays: inputs are numpy arrays (or anything np.asarray takes) in the data's
range: images float [N, H, W, C] in [0, 1] (logits with --logit_transform),
toy points [N, 2]; outputs are float32 numpy arrays, images in [0, 1].
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.config import flagfile
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.evaluation import likelihood as likelihood_eval
from ncsn_tf.pipeline.sources import Source
from ncsn_tf.runtime import console
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import guidance
from ncsn_tf.sampling import inpainting
from ncsn_tf.sampling import samplers

#: The flags `log_likelihood(**settings)` takes besides exact_trace and probes.
LIKELIHOOD_FLAGS = frozenset({'ode_rtol', 'ode_atol', 'sampling_eps', 'probe'})
#: Seeds must fit the stateless seeds' int32.
MAX_SEED = 2**31 - 1


def sampler_flags() -> frozenset:
  """--sampler and every flag a registered sampler reads (extensions' samplers too)."""
  flags = {'sampler'}
  for name in samplers.names():
    flags.update(samplers.get_sampler(name).settings.values())
  return frozenset(flags)


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
  """What `Pipeline.log_likelihood` returns: per example, float64 numpy arrays [N].

  log_prob: log p_model(x) in nats (by the probability-flow ODE).
  log_prob_stderr: the estimator's standard error of log_prob: 0 with the
    exact trace, the spread of the K Hutchinson probes' estimates over √K with
    K >= 2 probes, NaN with one probe (one draw has no spread). In 2-D a
    Rademacher probe's estimate takes only two values, so a few of them may
    agree by chance (spread 0): use exact_trace for the toys.
  bits_per_dim, bits_per_dim_stderr: the same in bits per dimension in 8-bit
    pixel units (docs/likelihood.md) for images; None for the toys.
  nfe: the ODE solver's evaluations of the score (with its divergence).
  probes: K, the Hutchinson probes per example (0: the exact trace).
  """
  log_prob: np.ndarray
  log_prob_stderr: np.ndarray
  bits_per_dim: np.ndarray | None
  bits_per_dim_stderr: np.ndarray | None
  nfe: int
  probes: int


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
      high is not None and value > high):
    bound = f'in [{low}, {high}]' if high is not None else f'>= {low}'
    raise ValueError(f'{name}: must be an integer {bound}, got {value!r}')
  return int(value)


class Pipeline:
  """A trained score model with one method per task; see the module docstring.

  Attributes:
    config: the run's Config (validated). data_shape: one example's shape,
    (2,) or (H, W, C). num_classes: the classes `label=` may name (0: this
    model draws no classes). sde: the run's SDE, or None for a ladder network.
    sigmas: the σ ladder, float32 [L], largest first. nfe: the score
    evaluations per sample of the last call (None before any, and for an
    export's labelled samples, whose signature does not report it).
    source: where the model came from (pipeline/sources.py Source: kind,
    path, step).
  """

  def __init__(self, source: Source):
    self.source = source
    self.config = source.config
    self.data_shape = tuple(data_lib.data_shape(source.config.data))
    self.sde = noise.build_sde(source.config.model)
    self.sigmas = np.asarray(source.score_model.sigmas, np.float32)
    self.nfe = None
    self._model = source.score_model
    self._is_image = not source.config.data.is_toy
    self._guided = None
    self._callbacks = {}
    # Labels and scale of guided sampling, read by one guided model at every call (one trace).
    self._labels = tf.Variable(np.zeros([0], np.int32), shape=tf.TensorShape([None]),
                               trainable=False, name='pipeline_labels')
    self._scale = tf.Variable(0.0, trainable=False, name='pipeline_guidance_scale')

  def __repr__(self) -> str:
    m, s = self.config.model, self.source
    step = f', step {s.step}' if s.step is not None else ''
    return (f'Pipeline({s.kind} {s.path!r}{step}: --model={m.name} on --dataset='
            f'{self.config.data.dataset}, --sde={m.sde}, {samplers.describe(self.config.sampling)})')

  @property
  def num_classes(self) -> int:
    if self.source.kind == 'export':
      return data_lib.num_classes(self.config.data) if hasattr(self.source.served,
                                                               'sample_class') else 0
    if self.config.sampling.guidance == 'classifier':
      return data_lib.num_classes(self.config.data)
    return self._model.num_classes

  # --- checks and conversions ------------------------------------------------------

  def _settings(self, sampler, settings):
    """The Config with `sampler` and sampler flags replaced; ConfigError naming a bad flag."""
    values = dict(settings)
    if sampler is not None:
      values['sampler'] = sampler
    if not values:
      return self.config  # Validated when loaded.
    return configured.validate(flagfile.with_flags(self.config, sampler_flags(), **values))

  def _batch(self, x, name: str, shape=None) -> np.ndarray:
    """x as float32 [N, *shape] (default the data's), finite, N >= 1; images in range."""
    shape = tuple(self.data_shape if shape is None else shape)
    try:
      x = np.asarray(x, np.float32)
    except (TypeError, ValueError):
      raise ValueError(f'{name}: must be a float array [N, {", ".join(map(str, shape))}]') from None
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or len(x) == 0:
      raise ValueError(f'{name}: must have shape [N, {", ".join(map(str, shape))}] with N >= 1, '
                       f'got {list(x.shape)}')
    if not np.all(np.isfinite(x)):
      raise ValueError(f'{name}: holds NaN or infinite values')
    return x

  def _images_in_range(self, images, name: str, upper_open: bool = False):
    if not self._is_image or self.config.data.logit_transform:
      return
    if images.min() < 0 or images.max() > 1 or (upper_open and images.max() >= 1):
      raise ValueError(f'{name}: images must be in [0, {"1)" if upper_open else "1]"}, got values '
                       f'in [{images.min():g}, {images.max():g}]')

  def _need_images(self, task: str):
    if not self._is_image:
      raise ValueError(f'{task}: needs an image model; --dataset={self.config.data.dataset} '
                       f'is 2-D points')

  def _label_array(self, label, num: int) -> np.ndarray | None:
    if label is None:
      return None
    if not self.num_classes:
      raise ValueError('label: this model draws no classes (train it with '
                       '--class_conditional, or guide it with --guidance=classifier)')
    labels = np.asarray(label)
    if labels.ndim == 0:
      labels = np.full([num], labels)
    if labels.ndim != 1 or len(labels) != num or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f'label: an int or a list of {num} ints (one per sample), got {label!r}')
    bad = labels[(labels < 0) | (labels >= self.num_classes)]
    if bad.size:
      raise ValueError(f'label: classes are 0..{self.num_classes - 1}, got {int(bad[0])}')
    return labels.astype(np.int32)

  def _step_callback(self, callback):
    """The samplers' callback(step, num_steps, x) calling the user's callback(step, x).

    One wrapper per user function (kept for the pipeline's life), so calling again with
    the same function reuses the sampler's trace.
    """
    if callback is None:
      return None
    if not callable(callback):
      raise ValueError(f'callback: must be a function callback(step, x), got {callback!r}')
    if id(callback) not in self._callbacks:
      self._callbacks[id(callback)] = (callback, lambda step, num_steps, x: callback(step, x))
    return self._callbacks[id(callback)][1]

  def _output(self, samples) -> np.ndarray:
    samples = np.asarray(samples, np.float32)
    return data_lib.to_unit_range(samples, self.config.data) if self._is_image else samples

  def _draw(self, config, model, num, seed, stream, condition=None, callback=None):
    """One chain of `num` samples of `model` with config's sampler on `stream`; sets nfe."""
    sampler = configured.ConfiguredSampler(config, model, self.data_shape)
    # A notebook calls with new settings on purpose: each is its own graph, not a defect.
    with console.expected_retracing():
      samples, _, nfe = sampler.sample(num, seed, stream=stream, condition=condition,
                                       callback=self._step_callback(callback))
    self.nfe = int(nfe)
    return self._output(samples)

  # --- the tasks ----------------------------------------------------------------------

  def sample(self, num: int, *, sampler=None, seed: int = 0, label=None, guidance_scale=None,
             callback=None, **settings) -> np.ndarray:
    """`num` samples, float32 [num, *data_shape] in the data's range (images in [0, 1]).

    sampler: a registered sampler's name ('ald', 'pc', 'ode', 'heun', ...;
      None: the run's --sampler). settings: flags of the samplers by name
      (sampling_steps=18, snr=0.1, ode_rtol=1e-3, n_steps_each=5, ...).
    seed: int in [0, 2^31 − 1]; the same seed gives the same samples.
    label: an int, or `num` ints, in [0, num_classes): class-conditional
      samples by the run's guidance (classifier-free for a class-conditional
      network, classifier guidance with --guidance=classifier), at scale
      `guidance_scale` (None: the run's --guidance_scale).
    callback: callback(step, x) with x float32 numpy [num, *data_shape],
      after every step of samplers that have steps (the ODE: once, at its end).
    """
    num = _check_int(num, 'num', 1)
    seed = _check_int(seed, 'seed', 0, MAX_SEED)
    labels = self._label_array(label, num)
    config = self._settings(sampler, settings)
    if labels is None:
      if guidance_scale is not None:
        raise ValueError('guidance_scale: guides labelled samples only; pass label= too')
      return self._draw(config, self._model, num, seed, 'served', callback=callback)
    scale = self.config.sampling.guidance_scale if guidance_scale is None else guidance_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not (
        math.isfinite(scale) and scale >= 0):
      raise ValueError(f'guidance_scale: must be a finite number >= 0, got {guidance_scale!r}')
    if self.source.kind == 'export':
      return self._served_class_samples(config, labels, float(scale), seed, callback)
    self._labels.assign(labels)
    self._scale.assign(float(scale))
    return self._draw(config, self._guided_model(), num, seed, 'served', callback=callback)

  def _guided_model(self):
    """The guided score model of a workdir or torch source, built once (one sampler trace)."""
    if self._guided is None:
      kind = 'classifier' if self.config.sampling.guidance == 'classifier' else 'free'
      classifier = guidance.load_classifier(self.config) if kind == 'classifier' else None
      self._guided = guidance.guided_score_model(kind, self._model, self._labels, self._scale,
                                                 classifier=classifier)
    return self._guided

  def _served_class_samples(self, config, labels, scale, seed, callback):
    """Labelled samples from an export: its `sample_class` signature (the run's sampler)."""
    own = samplers.describe(self.config.sampling)
    if samplers.describe(config.sampling) != own:
      raise ValueError(f'sampler: an export draws labelled samples with its own sampler, {own}, '
                       f'in its sample_class signature; load the workdir to choose another')
    if callback is not None:
      raise ValueError('callback: an export draws labelled samples in one signature call, with '
                       'no steps to report; load the workdir to follow the chain')
    out = self.source.served.sample_class(tf.constant(labels), tf.constant(scale, tf.float32),
                                          tf.constant(seed, tf.int32))
    self.nfe = None  # The signature does not report it.
    return self._output(out['samples'] if isinstance(out, dict) else out)

  def score(self, x, sigma) -> np.ndarray:
    """The score ∇_x log p_σ(x), float32 [N, *data_shape].

    x: [N, *data_shape]. sigma: a float or [N] floats > 0, in data units: any σ
    for a continuous-σ model; for a ladder network one of its `sigmas` (a σ
    off the ladder raises the ladder's error, a ValueError here).
    """
    x = self._batch(x, 'x')
    sigma = np.asarray(sigma, np.float32)
    if sigma.ndim == 0:
      sigma = np.full([len(x)], sigma, np.float32)
    if sigma.shape != (len(x),) or not np.all(np.isfinite(sigma)) or not np.all(sigma > 0):
      raise ValueError(f'sigma: a float or {len(x)} floats (one per example), each > 0, got '
                       f'shape {list(sigma.shape)}')
    try:
      return self._model.score_sigma(tf.constant(x), tf.constant(sigma)).numpy()
    except tf.errors.InvalidArgumentError as e:  # A σ off a ladder network's ladder.
      raise ValueError(f'sigma: {e.message}') from None

  def log_likelihood(self, x, *, exact_trace=None, probes=None, seed: int = 0,
                     **settings) -> LogLikelihood:
    """log p_model(x) per example by the probability-flow ODE (continuous-σ models with --sde).

    x: [N, *data_shape] as the model sees it: toy points, or dequantised images
      in [0, 1) (ncsn_tf.data.images.dequantize).
    exact_trace: the divergence by autodiff, one pass per dimension (the toys);
      None: the run's --exact_trace, unless `probes` is given (then Hutchinson's
      estimate). probes: K >= 1 Hutchinson probes per
      example (None: the run's --hutchinson_probes); each probe is its own
      estimate, so K >= 2 gives a standard error. seed: the probes' seed (the
      probes of K = 1 are the export's log_likelihood's at this seed).
    settings: ode_rtol, ode_atol, sampling_eps (the start time ε), probe.
    """
    if self.sde is None or not self._model.is_continuous:
      raise ValueError('log_likelihood: needs a continuous-σ model with an SDE (--sde, '
                       '--noise_embedding=fourier); a ladder network has no score between '
                       'its levels to integrate')
    seed = _check_int(seed, 'seed', 0, MAX_SEED)
    values = dict(settings)
    if exact_trace is None and probes is not None:
      exact_trace = False  # Asking for probes asks for Hutchinson's estimate.
    if exact_trace is not None:
      values['exact_trace'] = exact_trace
    if probes is not None:
      values['hutchinson_probes'] = probes
    config = flagfile.with_flags(self.config, LIKELIHOOD_FLAGS | {'exact_trace',
                                                                   'hutchinson_probes'}, **values)
    x = self._batch(x, 'x')
    self._images_in_range(x, 'x', upper_open=True)
    ode = likelihood_eval.ode_settings(config)
    # What --mode=likelihood and the served log_likelihood compute: one path, K probes
    # along it, their spread the standard error (0 for the exact trace, NaN for one probe).
    with console.expected_retracing():
      log_prob, stderr, nfe = likelihood_eval.model_log_prob(
          config, self._model, tf.constant(x), tf.constant([seed, 0], tf.int32))
    mean = log_prob.numpy().astype(np.float64)
    stderr = stderr.numpy().astype(np.float64)
    bpd = bpd_stderr = None
    if self._is_image:
      bpd = likelihood_eval.image_bits_per_dim(config, mean, x).numpy().astype(np.float64)
      # bits/dim is affine in log p with slope −1/(D ln 2) (the logit's log-det is x's alone).
      bpd_stderr = stderr / (np.prod(self.data_shape) * np.log(2.0))
    self.nfe = int(nfe)
    return LogLikelihood(mean, stderr, bpd, bpd_stderr, self.nfe,
                         0 if ode['exact_trace'] else ode['hutchinson_probes'])

  def inpaint(self, images, mask, *, sampler=None, seed: int = 0, callback=None,
              **settings) -> np.ndarray:
    """Completions of `images` where `mask` is 0, float32 [N, *data_shape] in [0, 1].

    images: [N, H, W, C] in [0, 1]. mask: [N, H, W, C] or [H, W, C] of 0
    (generate) and 1 (keep), or a kind of ncsn_tf.sampling.inpainting
    ('right', 'left', 'top', 'bottom', 'center', 'random'). The known pixels
    are kept exactly; sampler, seed, callback and settings as in `sample`.
    """
    self._need_images('inpaint')
    images = self._batch(images, 'images')
    self._images_in_range(images, 'images')
    seed = _check_int(seed, 'seed', 0, MAX_SEED)
    if isinstance(mask, str):
      if mask not in inpainting.MASK_KINDS:
        raise ValueError(f'mask: one of {", ".join(inpainting.MASK_KINDS)}, or an array of 0 '
                         f'and 1, got {mask!r}')
      mask = inpainting.make_mask(mask, images.shape, seed=seed)
    mask = np.asarray(mask, np.float32)
    if mask.shape == self.data_shape:
      mask = np.broadcast_to(mask, images.shape)
    if mask.shape != images.shape or not np.all((mask == 0) | (mask == 1)):
      raise ValueError(f'mask: 0 (generate) and 1 (keep), shaped as the images '
                       f'{list(images.shape)} or one image {list(self.data_shape)}, got shape '
                       f'{list(mask.shape)}')
    config = self._settings(sampler, settings)
    return self._draw(config, self._model, len(images), seed, 'served_condition',
                      conditions.inpainting(images, mask), callback)

  def colorize(self, images, *, sampler=None, seed: int = 0, callback=None,
               **settings) -> np.ndarray:
    """Colourisations of grey images, float32 [N, H, W, 3] in [0, 1] (RGB models).

    images: grey [N, H, W, 1] or RGB [N, H, W, 3] (its grey axis is kept) in
    [0, 1]. Each pixel's grey value is kept exactly and its colour generated;
    sampler, seed, callback and settings as in `sample`.
    """
    self._need_images('colorize')
    height, width, channels = self.data_shape
    if channels != conditions.ColourTransform.channels or self.config.data.logit_transform:
      raise ValueError(f'colorize: needs an RGB model that is not --logit_transform; this one has '
                       f'{channels} channel(s)')
    # Grey or RGB input: the channel count given, when it is one of those two.
    given = np.shape(images)[-1] if np.ndim(images) == len(self.data_shape) + 1 else None
    images = self._batch(images, 'images', (height, width, given if given in (1, channels)
                                            else channels))
    self._images_in_range(images, 'images')
    seed = _check_int(seed, 'seed', 0, MAX_SEED)
    config = self._settings(sampler, settings)
    return self._draw(config, self._model, len(images), seed, 'served_condition',
                      conditions.colorization(images), callback)
