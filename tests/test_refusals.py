"""Bad requests to runs are refused, never obeyed: one line, a nonzero exit, nothing changed.

The categories: a float setting that parses as NaN or infinity; a setting
that would be silently ignored (--class_label without --guidance); an input
file that does not decode (a mask image, a run's config.json, FID statistics,
the Inception graph); an override that would change what a command is
(NCSN_TF_EXTRA_FLAGS). Each refused command leaves the whole directory tree
it was pointed at as it was, byte for byte, and adds nothing (a likelihood run
without checkpoints once added a TensorBoard file).
"""

import hashlib
import math
import os
import shutil

import pytest
from conftest import REPO_ROOT
from test_cli import run_cli

from ncsn_tf import config as config_lib
from ncsn_tf.config import flags as ncsn_flags
from ncsn_tf.evaluation import images as image_eval

CFG = os.path.join(REPO_ROOT, 'tf_configs')
FLOAT_SETTINGS = [s for s in config_lib.settings() if s.value_type is float]


def _base_config(tmp_path) -> config_lib.Config:
  return config_lib.Config(name='t', workdir=str(tmp_path / 'w'),
                           export=config_lib.ExportConfig(str(tmp_path / 'e')))


@pytest.mark.parametrize('setting', FLOAT_SETTINGS, ids=[s.flag for s in FLOAT_SETTINGS])
@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_every_float_setting_refuses_nan_and_infinity(tmp_path, setting, value):
  config = _base_config(tmp_path)
  group, _, field = setting.path.rpartition('.')
  config = config.replace(**{group: {field: value}}) if group else \
      config.replace(**{field: value})
  if setting.field.metadata['infinite_ok'] and value == math.inf:
    config_lib.validate(config)  # S_tmax = inf: no bound (Karras et al. 2022's default).
    return
  with pytest.raises(config_lib.ConfigError,
                     match=f'^--{setting.flag}: must be a finite number, got {value}$'):
    config_lib.validate(config)


def test_the_help_of_mode_names_every_mode():
  help_text = ncsn_flags.FLAGS['mode'].help
  assert all(f'{mode}:' in help_text for mode in config_lib.MODES), help_text
  assert 'likelihood' in config_lib.MODES


def _tree(root) -> dict:
  """{relative path: (kind, sha1 of the contents, mtime)} of everything under root."""
  found = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      if os.path.islink(path):
        entry = ('link', os.readlink(path), None)
      elif os.path.isdir(path):
        entry = ('dir', None, os.stat(path).st_mtime_ns)
      else:
        entry = ('file', hashlib.sha1(open(path, 'rb').read()).hexdigest(),
                 os.stat(path).st_mtime_ns)
      found[os.path.relpath(path, root)] = entry
  return found


@pytest.fixture
def results_tree(tmp_path):
  """A workdir that already holds results (as a finished run leaves them)."""
  workdir = tmp_path / 'runs' / 'sde'
  result = workdir / 'samples' / 'ode,rtol=1e-05,seed=0,step=8000'
  result.mkdir(parents=True)
  (result / 'samples.npz').write_bytes(b'good samples')
  os.symlink(result.name, workdir / 'samples' / 'latest')
  (workdir / 'checkpoints').mkdir()
  (tmp_path / 'mask.png').write_bytes(b'\x89PNG\r\n\x1a\n this is no image')
  return tmp_path


@pytest.mark.parametrize('args,env,expected', [
    (['toy_gmm_sde', '--mode=sample', '--prior_mean=nan'], None,
     'error: --prior_mean: must be a finite number, got nan'),
    (['toy_gmm_sde', '--sde=vp', '--prior_mean=0', '--beta_max=inf'], None,
     'error: --beta_max: must be a finite number, got inf'),
    (['digits', '--mode=sample', '--guidance=none', '--class_label=3'], None,
     'error: --class_label: 3 applies to guided sampling: pass --guidance=free'),
    (['shapes_sde', '--mode=inpaint', '--inpaint_mask=MASK'], None,
     "does not decode as an image"),
    (['toy_gmm_sde', '--mode=sample'], '--mode=train',
     'error: NCSN_TF_EXTRA_FLAGS: --mode cannot be overridden here'),
])
def test_a_refused_command_says_why_in_one_line_and_changes_nothing(results_tree, args, env,
                                                                     expected):
  flagfile, *flags = args
  flags = [f.replace('MASK', str(results_tree / 'mask.png')) for f in flags]
  before = _tree(results_tree)
  extra = {'NCSN_TF_EXTRA_FLAGS': env} if env else {}
  result = run_cli(f'--flagfile={CFG}/{flagfile}.cfg', f'--workdir={results_tree}/runs/sde',
                   f'--export_dir={results_tree}/saved', *flags, env_extra=extra)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
  if 'MASK' in ' '.join(args):
    assert lines[0].startswith(f"error: --inpaint_mask: '{results_tree}/mask.png'")
  assert _tree(results_tree) == before


def test_a_corrupt_config_json_is_named_and_left_alone(results_tree):
  config_json = results_tree / 'runs' / 'sde' / 'config.json'
  config_json.write_text('{"model": {"sde": "ve",')  # Cut off (a full disk, a kill).
  before = _tree(results_tree)
  result = run_cli(f'--flagfile={CFG}/toy_gmm_sde.cfg', f'--workdir={results_tree}/runs/sde',
                   '--mode=sample')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f'error: --workdir: {config_json} is not readable JSON (Expecting property name enclosed '
      'in double quotes: line 1 column 24 (char 23)); restore it from a copy, or use a new '
      'directory']
  assert _tree(results_tree) == before


def test_a_refused_likelihood_run_adds_nothing_to_the_workdir(results_tree):
  """No checkpoint to score: one line, exit 1, and no TensorBoard event file (it was
  created before the checkpoints were looked for)."""
  before = _tree(results_tree)
  result = run_cli(f'--flagfile={CFG}/toy_gmm_sde.cfg', f'--workdir={results_tree}/runs/sde',
                   '--mode=likelihood')
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith('error: no checkpoint in ')
  assert 'Traceback' not in result.stderr
  assert _tree(results_tree) == before


def test_statistics_and_graph_files_that_do_not_decode_are_named(tmp_path):
  garbage = tmp_path / 'stats.npz'
  garbage.write_bytes(b'PK\x03\x04 not really a zip')
  config = _base_config(tmp_path).replace(
      data={'dataset': 'shapes'}, model={'name': 'unet'},
      eval={'reference_stats': str(garbage), 'inception_kind': 'fid_graph',
            'inception_path': str(tmp_path / 'graph.pb')})
  with pytest.raises(config_lib.ConfigError, match=f'^--reference_stats: {garbage}: '):
    image_eval.reference_for(config, extractor=None)
  (tmp_path / 'graph.pb').write_bytes(b'\xff\xfe not a GraphDef')
  with pytest.raises(config_lib.ConfigError,
                     match=f'^--inception_path: {tmp_path}/graph.pb is not a TensorFlow GraphDef'):
    image_eval.build_extractor(config.eval)


def test_a_classifier_workdir_with_a_corrupt_config_json_is_refused(tmp_path):
  classifier = tmp_path / 'classifier'
  (classifier / 'checkpoints').mkdir(parents=True)
  (classifier / 'checkpoints' / 'checkpoint').write_text('model_checkpoint_path: "ckpt-1"\n')
  (classifier / 'config.json').write_bytes(b'\x00\x01')
  config = _base_config(tmp_path).replace(
      data={'dataset': 'digits', 'image_size': 8}, model={'name': 'unet'},
      sampling={'guidance': 'classifier', 'classifier_workdir': str(classifier)})
  with pytest.raises(config_lib.ConfigError, match='^--classifier_workdir: .* is not readable JSON'):
    config_lib.validate(config)
  shutil.rmtree(classifier)


def test_a_checkpoint_of_another_model_is_named_in_one_line_and_kept(tmp_path):
  """A workdir reused without its config.json (so the resume rules cannot compare
  settings) holding a checkpoint of another network: its variables have other
  shapes, which TensorFlow reports as a ValueError deep in the restore."""
  from test_train_lib import tiny_config  # pylint: disable=import-outside-toplevel
  from ncsn_tf.training import loop as train_loop  # pylint: disable=import-outside-toplevel
  train_loop.train(tiny_config(tmp_path / 'run', train_steps=2, snapshot_freq=2))
  os.remove(tmp_path / 'run' / 'config.json')
  before = _tree(tmp_path)
  result = run_cli(f'--flagfile={CFG}/toy_gmm.cfg', f'--workdir={tmp_path}/run', '--mode=train',
                   f'--export_dir={tmp_path}/e', '--ngf=8')
  assert result.returncode == 2, result.stderr[-2000:]
  # The run's own INFO lines (mode, devices), then the refusal as the last line: no
  # traceback, and none of TensorFlow's warnings about the abandoned restore.
  lines = result.stderr.strip().splitlines()
  assert [l[0] for l in lines[:-1]] == ['I'] * (len(lines) - 1), result.stderr[-2000:]
  assert lines[-1].startswith(f'error: --workdir: the checkpoint {tmp_path}/run/checkpoints/'
                              'ckpt-2 does not match this model (Received incompatible tensor')
  assert lines[-1].endswith(f'delete {tmp_path}/run/checkpoints to start fresh')
  assert _tree(tmp_path) == before
  # The other modes restore through restore_for_inference: the same line.
  from ncsn_tf.runtime import checkpoints  # pylint: disable=import-outside-toplevel
  other = tiny_config(tmp_path / 'run').replace(model={'ngf': 8})
  with pytest.raises(config_lib.ConfigError, match=r'^--workdir: the checkpoint .*/ckpt-2 does '
                     r'not match this model \(Received incompatible tensor'):
    checkpoints.restore_for_inference(other)
  assert _tree(tmp_path) == before
