"""Where a pipeline's score model comes from: a trained workdir, a SavedModel export, or
the paper's own PyTorch checkpoint.

`open_source(path, ...)` tells the three apart and returns a `Source`: the
run's validated Config and a ScoreModel (models/score_model.py) answering
`score_index`, `score_sigma` and `score_t`, which every sampler, condition and
the likelihood ask. So the pipeline above does the same thing whatever the
source, and a workdir and its own export give the same answers:

* a workdir (config.json and checkpoints/): the Config of its config.json and
  the latest (or a chosen) checkpoint's EMA network, or the network itself;
* a SavedModel version directory (saved_model.pb), or an export root holding
  numbered versions (the newest is taken): the Config the export stores
  (`config_json`), its ladder (`sigmas`) and its `score_sigma` (continuous-σ
  models) or `score` (ladder models) signature as the network. No checkpoint
  and no rebuilt network: only what the export holds;
* a file: an official ermongroup/ncsn `checkpoint.pth`, read without torch
  (models/torch_checkpoint.py) into the RefineNet of a flagfile's Config
  (pipeline/official.py).
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.pipeline import official
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import configured

#: What a SavedModel directory holds at its top.
SAVED_MODEL_FILE = 'saved_model.pb'
#: What a workdir holds: its configuration, and checkpoints/.
WORKDIR_CONFIG = 'config.json'


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """A loaded model and where it came from.

  kind: 'workdir', 'export' or 'torch'. path: the workdir, the SavedModel
  version directory or the checkpoint file. config: the run's validated
  Config. score_model: a ScoreModel (EMA network, served signature or
  converted official network). step: the checkpoint's training step (None
  for an export, or a torch file without optimizer state). served: the
  loaded SavedModel of an export (its `sample_class` draws labelled samples).
  """
  kind: str
  path: str
  config: config_lib.Config
  score_model: ScoreModel
  step: int | None = None
  served: object | None = None


class ServedNetwork:
  """An export's score signature as the network a ScoreModel wraps: (x, σ or level) -> score.

  A continuous-σ export answers through `score_sigma(x, sigma)`, a ladder
  export through `score(x, sigma_index)`; both are differentiable (the
  likelihood's divergence) and run inside the samplers' graphs. The served
  scores are unconditional (`label_classes` 0): an export draws labelled
  samples through its own `sample_class` signature.
  """
  label_classes = 0

  def __init__(self, loaded, continuous: bool):
    self._loaded = loaded  # Its variables live as long as the functions that read them.
    self._function = loaded.score_sigma if continuous else loaded.score
    # The export refuses a request of more than max_batch examples (--export_max_batch);
    # a sampler's batch of `num` may be larger, so larger batches go in chunks.
    # (An export made before the cap has no max_batch: any batch goes in one call.)
    cap = getattr(loaded, 'max_batch', None)
    self.max_batch = int(cap.numpy()) if cap is not None else None

  def _score(self, x, level):
    out = self._function(x, level)
    return out['score'] if isinstance(out, dict) else out

  def __call__(self, x, level):
    """x [N, ...], level [N] (σ or σ index) -> score [N, ...]; any N >= 1."""
    n = x.shape[0]
    if self.max_batch is None or (n is not None and n <= self.max_batch):
      return self._score(x, level)
    return tf.cond(tf.shape(x)[0] <= self.max_batch, lambda: self._score(x, level),
                   lambda: self._chunked(x, level))

  def _chunked(self, x, level):
    """The score of x in chunks of max_batch (the last padded with copies of x[0]), one
    signature call each: differentiable, as the likelihood's divergence needs."""
    m, n = self.max_batch, tf.shape(x)[0]
    chunks = (n + m - 1) // m
    pad = chunks * m - n
    x_padded = tf.concat([x, tf.repeat(x[:1], pad, axis=0)], 0)
    level_padded = tf.concat([level, tf.repeat(level[:1], pad, axis=0)], 0)
    xs = tf.reshape(x_padded, tf.concat([[chunks, m], tf.shape(x)[1:]], 0))
    levels = tf.reshape(level_padded, [chunks, m])
    scores = tf.map_fn(lambda args: self._score(*args), (xs, levels),
                       fn_output_signature=tf.TensorSpec(None, x.dtype))
    return tf.reshape(scores, tf.shape(x_padded))[:n]


def kind_of(path: str) -> str:
  """'workdir', 'export' (a version or a root of versions) or 'torch'; ValueError otherwise."""
  if os.path.isfile(path):
    return 'torch'
  if os.path.isfile(os.path.join(path, WORKDIR_CONFIG)):
    return 'workdir'
  if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)) or _versions(path):
    return 'export'
  if not os.path.exists(path):
    raise FileNotFoundError(f'path: {path!r} does not exist')
  raise ValueError(f'path: {path!r} is neither a workdir (with {WORKDIR_CONFIG}), a SavedModel '
                   f'export (a version with {SAVED_MODEL_FILE}, or a root of numbered versions) '
                   f'nor a checkpoint file')


def _versions(root: str) -> dict:
  """{version: directory} of the numbered SavedModel versions under `root`."""
  if not os.path.isdir(root):
    return {}
  return {int(name): os.path.join(root, name) for name in os.listdir(root)
          if name.isdigit() and os.path.isfile(os.path.join(root, name, SAVED_MODEL_FILE))}


def open_source(path, *, step=None, ema: bool = True, config=None) -> Source:
  """The Source at `path` (see the module docstring); one-line errors naming the argument.

  step: a workdir's checkpoint step (None: the latest). ema: a workdir's EMA
  network (True) or the trained network itself. config: the torch route's
  Config, or the name or path of its flagfile ('cifar10'); for a workdir or an
  export their own Config is used and `config` must be None.
  """
  path = os.fspath(path)
  kind = kind_of(path)
  if kind != 'torch' and config is not None:
    raise ValueError(f'config: a {kind} carries its own configuration; config= is for '
                     f'official checkpoint files')
  if kind != 'workdir' and step is not None:
    raise ValueError(f'step: only a workdir has checkpoints to choose from; {path!r} is '
                     f'{"an export" if kind == "export" else "a checkpoint file"}')
  if kind == 'workdir':
    return _workdir(path, step, ema)
  if not ema:
    raise ValueError(f'ema: {path!r} holds one set of weights (an export keeps the EMA '
                     f'network); ema=False needs the workdir')
  if kind == 'export':
    return _export(path)
  model, config, step = official.load(path, config)
  return Source('torch', path, config, model, step=step)


def _workdir(path: str, step, ema: bool) -> Source:
  with open(os.path.join(path, WORKDIR_CONFIG)) as f:
    saved = config_lib.Config.from_dict(json.load(f))
  # The workdir where it is now (it may have moved since its run wrote config.json).
  config = configured.validate(saved.replace(workdir=path))
  if step is None:
    state = checkpoints.restore_for_inference(config)
  else:
    found = checkpoints.checkpoint_steps(config)
    if step not in found:
      raise ValueError(f'step: {path!r} has checkpoints at steps {sorted(found)}, not {step!r}')
    state = checkpoints.create_state(config, tf.distribute.get_strategy())
    checkpoints.restore_step(state, found[step])
  model = (state.score_model if ema else
           ScoreModel(state.model, state.sigmas, continuous=state.continuous))
  return Source('workdir', path, config, model, step=int(state.step.numpy()))


def _export(path: str) -> Source:
  versions = _versions(path)
  if versions:
    path = versions[max(versions)]
  loaded = tf.saved_model.load(path)
  saved = config_lib.Config.from_dict(json.loads(loaded.config_json.numpy().decode('utf-8')))
  # Validated (importing the run's --extensions) with the export standing in for the
  # run's directories, which need not exist on this machine.
  config = configured.validate(saved.replace(workdir=path,
                                             export={'export_dir': os.path.dirname(path)}))
  continuous = config.model.noise_embedding == 'fourier'
  sigmas = np.asarray(loaded.sigmas.numpy(), np.float32)
  model = ScoreModel(ServedNetwork(loaded, continuous), sigmas, continuous=continuous)
  return Source('export', path, config, model, served=loaded)
