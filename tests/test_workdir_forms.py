"""Every mode finds a workdir's checkpoints whatever the form of --workdir.

The bug this guards against: --mode=eval and --mode=likelihood list the
checkpoints with `checkpoints.checkpoint_steps`, which joined the checkpoint
directory with paths that TensorFlow had already joined, so every relative
--workdir (the default runs/<name> included) said "no checkpoint" while they
were there. Tests that pass absolute temporary paths never saw it.
"""

import os
import shutil

import pytest

from ncsn_tf import config as config_lib
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.runtime import checkpoints
from ncsn_tf.training import loop as train_loop

STEPS = (1, 2)


def _config(workdir: str) -> config_lib.Config:
  return config_lib.validate(config_lib.Config(
      name='forms', workdir=workdir,
      model=config_lib.ModelConfig(sigma_begin=10.0, sigma_end=1.0, num_scales=3, ngf=8,
                                   num_layers=1),
      train=config_lib.TrainConfig(batch_size=8, train_steps=STEPS[-1], snapshot_freq=1,
                                   log_freq=1, heldout_batches=0),
      export=config_lib.ExportConfig(workdir.rstrip('/') + '_export')))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A directory holding runs/w, trained from inside it with the relative --workdir runs/w."""
  root = tmp_path_factory.mktemp('forms')
  cwd = os.getcwd()
  os.chdir(root)
  try:
    train_loop.train(_config(os.path.join('runs', 'w')))
  finally:
    os.chdir(cwd)
  os.symlink(root / 'runs' / 'w', root / 'link')
  return root


FORMS = ['runs/w', './runs/w', 'runs/w/', 'runs//w', 'link', 'link/', 'ABSOLUTE']


@pytest.mark.parametrize('form', FORMS)
def test_every_form_of_workdir_lists_and_restores_the_checkpoints(trained, monkeypatch, form):
  monkeypatch.chdir(trained)
  workdir = str(trained / 'runs' / 'w') if form == 'ABSOLUTE' else form
  config = _config(workdir)
  assert sorted(checkpoints.checkpoint_steps(config)) == list(STEPS)
  # What --mode=eval and --mode=likelihood select, and what sample/export restore.
  assert list(image_eval.select_checkpoints(config)) == [STEPS[-1]]
  assert sorted(image_eval.select_checkpoints(config.replace(eval={'checkpoints': 'all'}))) \
      == list(STEPS)
  state = checkpoints.restore_for_inference(config)
  assert int(state.step.numpy()) == STEPS[-1]


def test_a_moved_workdir_is_found_by_checkpoint_name(trained, tmp_path):
  """A `checkpoint` file that records absolute paths (older writers) of a workdir that
  has since moved: the checkpoints are found in the directory they are now in."""
  moved = tmp_path / 'moved'
  shutil.copytree(trained / 'runs' / 'w', moved)
  record = moved / 'checkpoints' / 'checkpoint'
  old_dir = '/no/longer/here/checkpoints'
  lines = [f'model_checkpoint_path: "{old_dir}/ckpt-{STEPS[-1]}"']
  lines += [f'all_model_checkpoint_paths: "{old_dir}/ckpt-{s}"' for s in STEPS]
  record.write_text('\n'.join(lines) + '\n')
  found = checkpoints.checkpoint_steps(_config(str(moved)))
  assert found == {s: os.path.join(str(moved), 'checkpoints', f'ckpt-{s}') for s in STEPS}
