"""The training state and its checkpoints: create, resume-check, restore for inference.

`TrainState` holds what a checkpoint holds (model, EMA model, optimizer, step,
the seconds trained) and makes the EMA-or-not choice once
(`TrainState.score_model`). `create_state` builds it inside the strategy's
scope; `restore_for_inference` loads a workdir's latest checkpoint for sampling,
evaluation, export and the Python API; `check_resume_config` refuses a workdir
that holds a different model's checkpoints. <workdir>/checkpoints holds one
`tf.train.Checkpoint` per snapshot under a CheckpointManager.
"""

import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.models import classifier
from ncsn_tf.models import registry as networks
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import console
from ncsn_tf.runtime import devices
from ncsn_tf.runtime import lr_schedule
from ncsn_tf.runtime import precision


class ConfigMismatchError(config_lib.ConfigError):
  """The workdir holds a run of a different model/data/training configuration."""


@dataclasses.dataclass
class TrainState:
  """Everything a checkpoint holds, built inside the strategy's scope."""
  model: keras.Model
  ema_model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  sigmas: np.ndarray
  chief: bool = True  # False on non-chief workers: they write no outputs
  # Seconds the training loop has run, over all resumes (for --train_minutes).
  train_seconds: tf.Variable | None = None
  # The networks take σ (--noise_embedding=fourier) rather than a level index.
  continuous: bool = False

  @functools.cached_property
  def score_model(self):
    """The EMA network (the network itself without EMA) with its ladder, as a
    ScoreModel: what sampling, evaluation and export ask for scores. The
    EMA-or-not choice is made here, once (create_state aliases ema_model to
    model when --ema_rate=0)."""
    return ScoreModel(self.ema_model, self.sigmas, continuous=self.continuous)

  def checkpoint(self, *, include_train_seconds: bool = True, **extra) -> tf.train.Checkpoint:
    """The checkpoint of this state; include_train_seconds=False reads checkpoints
    written before train_seconds existed."""
    if include_train_seconds and self.train_seconds is not None:
      extra['train_seconds'] = self.train_seconds
    # tf.train.Checkpoint does not see Keras 3 layers kept in Python lists
    # (RefineNet's blocks): without the explicit weight lists, the EMA model's
    # blocks were not saved at all (the model's only through the optimizer).
    return tf.train.Checkpoint(step=self.step, model=self.model, ema_model=self.ema_model,
                               optimizer=self.optimizer, model_weights=list(self.model.weights),
                               ema_weights=list(self.ema_model.weights), **extra)


def ladder(config: config_lib.Config) -> np.ndarray:
  m = config.model
  return noise.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_scales)


def build_network(config: config_lib.Config, shape: tuple) -> keras.Model:
  """What --task trains: the score network, or the noise-conditional classifier."""
  if config.train.task == 'classifier':
    return classifier.build_from_config(config, shape, networks.label_count(config))
  return networks.build_model(config, shape)


def create_state(config: config_lib.Config, strategy: tf.distribute.Strategy) -> TrainState:
  """The networks (--task's: score network or classifier), their EMA copy, Adam and the step."""
  shape = data_lib.data_shape(config.data)
  # --precision=auto keeps a classifier in float32 (precision.resolve: only the
  # image score networks gain from bfloat16); its gradient steers guidance.
  name = 'classifier' if config.train.task == 'classifier' else config.model.name
  policy = precision.resolve(config.train.precision, name)
  devices.log_devices(strategy, policy, config.train.precision)
  # Same seed, same initial weights: a run is reproducible from its config.
  keras.utils.set_random_seed(config.seed)
  with strategy.scope(), precision.policy_scope(policy):
    model = build_network(config, shape)
    if config.train.ema_rate > 0:
      ema_model = build_network(config, shape)
      ema_model.set_weights(model.get_weights())
    else:  # No EMA (NCSN v1): sampling, evaluation and export use the model itself.
      ema_model = model
    t = config.train
    lr = lr_schedule.learning_rate(t.learning_rate, t.lr_schedule, t.warmup_steps, t.train_steps)
    optimizer = precision.make_optimizer(policy, lr, t.beta1)
    # Keras 3 optimizers must create their slots inside the scope before the
    # first tf.function step, or MirroredStrategy fails on a placeholder.
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
  # Outside the scope: a host-side count that only the Python loop assigns.
  train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name='train_seconds')
  return TrainState(model, ema_model, optimizer, step, ladder(config),
                    train_seconds=train_seconds,
                    continuous=config.model.noise_embedding == 'fourier')


def _has_train_seconds(checkpoint_path: str) -> bool:
  return any(name.startswith('train_seconds/')
             for name, _ in tf.train.list_variables(checkpoint_path))


def checkpoint_dir(config: config_lib.Config) -> str:
  return os.path.join(config.workdir, 'checkpoints')


def restore_for_inference(config: config_lib.Config, strategy=None) -> TrainState:
  """A TrainState restored from the latest checkpoint (error if there is none)."""
  strategy = strategy or tf.distribute.get_strategy()
  check_resume_config(config)
  state = create_state(config, strategy)
  latest = tf.train.latest_checkpoint(checkpoint_dir(config))
  if latest is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(config)}: train first '
                            f'(--mode=train with the same --workdir)')
  restore_checked(state.checkpoint(), latest, config, complete=False)
  logging.info('restored %s (step %d)', latest, int(state.step.numpy()))
  return state


def restore_checked(checkpoint: tf.train.Checkpoint, path: str, config: config_lib.Config, *,
                    complete: bool) -> None:
  """Restores `path` into `checkpoint`, or one ConfigError line if it does not fit.

  complete: every object of `checkpoint` must be in the file (resuming
  training needs the optimizer's slots too); otherwise only what is there is
  restored (inference). A variable of another shape (the network or the
  optimizer's schedule changed, e.g. a workdir reused without its config.json)
  is a ValueError inside TensorFlow, a missing one an AssertionError: both
  become one line naming the checkpoint instead of a traceback.
  """
  try:
    status = checkpoint.restore(path)
    if complete:
      status.assert_existing_objects_matched()
    else:
      status.expect_partial()
  except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as error:
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    console.drop_unrestored_warnings()
    raise config_lib.ConfigError(
        f'--workdir: the checkpoint {path} does not match this model ({detail}); it was written '
        f'by another version or configuration: use a new --workdir, or delete '
        f'{checkpoint_dir(config)} to start fresh') from None


def check_resume_config(config: config_lib.Config):
  """Refuses a workdir whose checkpoints belong to a different configuration.

  Compares <workdir>/config.json with `config` on every field that changes the
  model, the data or the optimisation (config_lib.RESUME_SAFE_FIELDS may
  differ); raises ConfigMismatchError naming the fields and how to start fresh.
  """
  path = os.path.join(config.workdir, 'config.json')
  if not os.path.exists(path) or tf.train.latest_checkpoint(checkpoint_dir(config)) is None:
    return
  saved = config_lib.read_json(path, 'workdir')
  differences = config_lib.resume_mismatches(saved, config)
  if differences:
    raise ConfigMismatchError(
        f'--workdir: {config.workdir} holds checkpoints of a different configuration '
        f'({"; ".join(differences)}); to start fresh pass a new --workdir or delete '
        f'{config.workdir}, or rerun with the saved flags to resume')


def write_config_json(config: config_lib.Config):
  """<workdir>/config.json: the run's resolved configuration (resume checks read it)."""
  artifacts.write_text(os.path.join(config.workdir, 'config.json'), config.to_json())


def checkpoint_steps(config: config_lib.Config) -> dict:
  """{step: checkpoint prefix} of every checkpoint kept in <workdir>/checkpoints, by step.

  Works for every form of --workdir (relative, absolute, './x', 'x/', through a
  symlink): tf.train.get_checkpoint_state already joins the recorded relative
  paths with the directory it was given, so a path is used as it comes back;
  only a recorded path that does not exist there (an absolute path of a
  workdir since moved or mounted elsewhere) is looked up by its file name in
  this checkpoint directory.
  """
  directory = checkpoint_dir(config)
  state = tf.train.get_checkpoint_state(directory)
  paths = list(state.all_model_checkpoint_paths) if state else []
  found = {}
  for path in paths:
    if not tf.io.gfile.exists(path + '.index'):
      path = os.path.join(directory, os.path.basename(path))
    if tf.io.gfile.exists(path + '.index'):
      found[int(path.rsplit('-', 1)[1])] = path
  return dict(sorted(found.items()))


def restore_step(state: TrainState, path: str) -> int:
  """Restores the checkpoint `path` into an existing state in place; returns its step.

  Reusing one state across a sweep keeps traced functions that close over its
  models valid (no re-tracing per checkpoint).
  """
  state.checkpoint().restore(path).expect_partial()
  step = int(state.step.numpy())
  logging.info('restored %s (step %d)', path, step)
  return step
