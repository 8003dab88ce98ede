"""The paper's own trained models: ermongroup/ncsn's `checkpoint.pth` as a score model or a workdir.

The official runner saves `[score.state_dict(), optimizer.state_dict()]` of
its CondRefineNetDilated under torch.nn.DataParallel. models/torch_checkpoint.py
reads the file without torch and models/reference_weights.py copies the
weights into this package's RefineNet by name (tests/test_torch_checkpoint.py
checks the result output for output against the reference model). The file
holds no settings, so a flagfile's Config supplies them: tf_configs/cifar10.cfg,
mnist.cfg and celeba.cfg hold the paper's (RefineNet ngf 128, 64 for MNIST;
L = 10 levels from σ 1 to 0.01; annealed Langevin with T = 100, ε = 2e-5).

* `load(path, config)`: (ScoreModel, Config, step), for `ncsn_tf.load`;
* `write_workdir(path, config)`: the weights as a workdir's checkpoint with its
  config.json, so that every `run.py` mode (sample, eval's IS/FID, inpaint,
  export) runs on the paper's model (docs/images.md).
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.models import registry as networks
from ncsn_tf.models import torch_checkpoint
from ncsn_tf.models.reference_weights import assign_reference_weights
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import configured

# The reference's parameters that give its width, ladder length and image channels.
_WIDTH_PARAMETER = 'begin_conv.bias'            # [ngf]
_LEVELS_PARAMETER = 'normalizer.embed.weight'   # [L, 2·ngf] (CIN++ γ | α)
_INPUT_PARAMETER = 'begin_conv.weight'          # [ngf, channels, 3, 3]


def resolve_config(config) -> config_lib.Config:
  """A validated Config from a Config, a flagfile path or a tf_configs/ name ('cifar10')."""
  if config is None:
    raise ValueError("config: a checkpoint file holds no settings; name its flagfile, e.g. "
                     "ncsn_tf.load('checkpoint.pth', config='cifar10')")
  if isinstance(config, str):
    config = config_lib.Config.from_flagfile(config)
  if not isinstance(config, config_lib.Config):
    raise ValueError(f'config: a Config, a flagfile path or a tf_configs/ name, got '
                     f'{type(config).__name__}')
  return configured.validate(config)


def _shape_facts(state: dict) -> dict:
  """{'ngf', 'num_scales', 'channels'} of a reference state_dict (names with or without `module.`)."""
  plain = {k.removeprefix(torch_checkpoint.DATA_PARALLEL_PREFIX): v for k, v in state.items()}
  missing = [n for n in (_WIDTH_PARAMETER, _LEVELS_PARAMETER, _INPUT_PARAMETER) if n not in plain]
  if missing:
    raise ValueError(f'the checkpoint is not an NCSN CondRefineNetDilated (no {missing[0]})')
  return {'ngf': plain[_WIDTH_PARAMETER].shape[0],
          'num_scales': plain[_LEVELS_PARAMETER].shape[0],
          'channels': plain[_INPUT_PARAMETER].shape[1]}


def _check_fits(path: str, config: config_lib.Config, state: dict):
  """ValueError naming what differs (and the fix) when the checkpoint's network is not the Config's."""
  if config.model.name != 'refinenet' or config.model.noise_embedding != 'ladder':
    raise ValueError(f'config: official checkpoints are CondRefineNetDilated ladder networks; '
                     f'the config has --model={config.model.name} '
                     f'--noise_embedding={config.model.noise_embedding}')
  facts = _shape_facts(state)
  wanted = {'ngf': config.model.ngf, 'num_scales': config.model.num_scales,
            'channels': data_lib.data_shape(config.data)[-1]}
  differ = [name for name in facts if facts[name] != wanted[name]]
  if differ:
    has = ', '.join(f'{n} {facts[n]}' for n in differ)
    says = ', '.join(f'{n} {wanted[n]}' for n in differ)
    fix = ', '.join(f'{n}={facts[n]}' for n in differ if n != 'channels')
    raise ValueError(f'config: {path} holds a network with {has}; the config {config.name} has '
                     f'{says}' + (f': pass config=ncsn_tf.Config.from_flagfile('
                                  f'{config.name!r}, {fix})' if fix else ''))


def _read(path: str, config: config_lib.Config):
  """(score state_dict, training step or None) of the checkpoint, checked against `config`."""
  saved = torch_checkpoint.load_state_dicts(path)
  state = torch_checkpoint.score_state_of(saved, path)
  _check_fits(path, config, state)
  return state, torch_checkpoint.training_step(saved)


def load(path: str, config) -> tuple:
  """(ScoreModel over the converted network, its validated Config, training step or None).

  config: a Config, a flagfile path or a tf_configs/ name whose model is the
  checkpoint's (RefineNet of the same ngf, levels and channels); its σ ladder
  is the one the network was trained on (the file does not hold it).
  """
  config = resolve_config(config)
  state, step = _read(path, config)
  # float32 weights and activations, as the reference computes (no mixed precision).
  network = networks.build_model(config, data_lib.data_shape(config.data))
  assign_reference_weights(network, state)
  logging.info('loaded %s into RefineNet ngf %d, %d levels (step %s)', path, config.model.ngf,
               config.model.num_scales, step)
  return ScoreModel(network, checkpoints.ladder(config), continuous=False), config, step


def write_workdir(path: str, config) -> str:
  """Writes the checkpoint's weights as a workdir's checkpoint, with its config.json; returns it.

  config: as `load`; its --workdir is where the checkpoint goes (refused if it
  already holds checkpoints). The step is the checkpoint's Adam step count
  (0 if the file has no optimizer state). Every `run.py` mode then runs on
  the workdir with the same flagfile: --mode=sample, --mode=eval (IS/FID),
  --mode=inpaint, --mode=export.
  """
  config = resolve_config(config)
  if tf.train.latest_checkpoint(checkpoints.checkpoint_dir(config)) is not None:
    raise ValueError(f'workdir: {config.workdir!r} already holds checkpoints; choose another '
                     f'--workdir')
  state_dict, step = _read(path, config)
  state = checkpoints.create_state(config, tf.distribute.get_strategy())
  for network in {id(state.model): state.model, id(state.ema_model): state.ema_model}.values():
    assign_reference_weights(network, state_dict)
  state.step.assign(np.int64(step or 0))
  checkpoints.write_config_json(config)
  manager = tf.train.CheckpointManager(state.checkpoint(), checkpoints.checkpoint_dir(config),
                                       max_to_keep=config.train.max_checkpoints)
  saved = manager.save(checkpoint_number=int(state.step.numpy()))
  logging.info('wrote %s from %s', saved, path)
  return config.workdir

