"""Results never overwrite each other: one directory per result, named for what made it.

Two --mode=sample runs with different samplers (or seeds, or guidance, or
checkpoints) leave both results, with `latest` pointing to the newer; the same
settings again replace only their own result; a failure or a kill while
writing leaves the previous result as it was. Progress shows inside one long
sampling batch.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_image_training import config_from_flagfile

from ncsn_tf import plots
from ncsn_tf.evaluation import results
from ncsn_tf.evaluation import samples as sample_outputs
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import progress as progress_lib
from ncsn_tf.sampling import draw


@pytest.fixture(scope='module')
def sde_toy(tmp_path_factory):
  """An untrained continuous toy (toy_gmm_sde.cfg, small): (config, state)."""
  workdir = tmp_path_factory.mktemp('results') / 'run'
  config = config_from_flagfile('toy_gmm_sde', '--num_samples=8', '--sample_batch_size=8',
                                '--sampling_steps=3', '--n_steps_each=1', f'--workdir={workdir}',
                                '--ngf=16', '--num_layers=1')
  return config, checkpoints.create_state(config, tf.distribute.get_strategy())


def _sample(config, state, **sampling):
  return sample_outputs.sample_run(config.replace(sampling=sampling), state)


def test_two_samplers_leave_both_results_and_latest_points_to_the_newer(sde_toy):
  config, state = sde_toy
  heun = _sample(config, state, sampler='heun')
  pc = _sample(config, state, sampler='pc')
  root = os.path.join(config.workdir, 'samples')
  assert os.path.basename(heun) == 'heun,num_steps=3,sampling_eps=1e-05,seed=0,step=0'
  assert os.path.basename(pc).startswith('pc,predictor=reverse_diffusion,corrector=langevin,')
  assert sorted(os.listdir(root)) == sorted(['latest', os.path.basename(heun),
                                             os.path.basename(pc)])
  assert os.readlink(os.path.join(root, 'latest')) == os.path.basename(pc)
  for out_dir, name in ((heun, 'heun'), (pc, 'pc')):
    assert np.load(os.path.join(out_dir, 'samples.npz'))['samples'].shape == (8, 2)
    made_by = json.loads(open(os.path.join(out_dir, 'settings.json')).read())
    assert made_by['sampler'] == name and made_by['step'] == 0 and made_by['seed'] == 0
  # Another seed is another result; the same settings again replace their own only.
  other_seed = sample_outputs.sample_run(config.replace(seed=1, sampling={'sampler': 'heun'}),
                                         state)
  assert other_seed.endswith(',seed=1,step=0') and os.path.isdir(heun)
  before = np.load(os.path.join(pc, 'samples.npz'))['samples']
  assert _sample(config, state, sampler='pc') == pc
  assert len([e for e in os.listdir(root) if not e.startswith('.')]) == 4  # 3 results, latest
  np.testing.assert_array_equal(np.load(os.path.join(pc, 'samples.npz'))['samples'], before)


def test_a_failure_while_writing_leaves_the_previous_result(sde_toy, monkeypatch):
  config, state = sde_toy
  out_dir = _sample(config, state, sampler='heun')
  written = open(os.path.join(out_dir, 'settings.json')).read()

  def broken_figure(*args, **kwargs):
    raise OSError('disk full')

  monkeypatch.setattr(plots, 'save_figure', broken_figure)
  with pytest.raises(OSError, match='disk full'):
    _sample(config, state, sampler='heun')
  root = os.path.dirname(out_dir)
  assert open(os.path.join(out_dir, 'settings.json')).read() == written
  assert not [e for e in os.listdir(root) if e.startswith('.')]  # No staging left behind.


def test_a_killed_writer_is_cleaned_up_and_a_result_it_moved_aside_comes_back(tmp_path):
  """What a kill -9 can leave: a staging directory, or (between the two renames) the
  old result moved aside with its replacement not yet in place."""
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True).stdout.strip()
  kind = tmp_path / 'samples'
  (kind / f'.tmp-a,seed=0,step=1-{dead}').mkdir(parents=True)
  (kind / f'.old-b,seed=0,step=1-{dead}').mkdir()
  (kind / f'.old-b,seed=0,step=1-{dead}' / 'samples.npz').write_text('kept')
  with results.writing(str(tmp_path), 'samples', 'c,seed=0,step=1', {'sampler': 'c'}) as out:
    (tmp_path / out / 'samples.npz').write_text('new')
  assert sorted(os.listdir(kind)) == ['b,seed=0,step=1', 'c,seed=0,step=1', 'latest']
  assert (kind / 'b,seed=0,step=1' / 'samples.npz').read_text() == 'kept'
  assert (kind / 'latest' / 'samples.npz').read_text() == 'new'


def test_result_names_list_what_made_them_and_stay_short():
  assert results.name_of('mask=right', 'ald,n_steps_each=2', seed=3, step=10) == \
      'mask=right,ald,n_steps_each=2,seed=3,step=10'
  assert results.name_of('mask=my mask/x.png', seed=0, step=0) == 'mask=my_mask_x.png,seed=0,step=0'
  long = results.name_of(*[f'setting_{k}=0.123456789' for k in range(30)], seed=0, step=5)
  assert len(long) == results.MAX_NAME and '~' in long
  assert long != results.name_of(*[f'setting_{k}=0.123456789' for k in range(31)], seed=0, step=5)


def test_a_single_batch_shows_its_progress_step_by_step(sde_toy, monkeypatch):
  """One batch of a 60-step PC chain: the line moves with the steps, not only at the end."""
  config, state = sde_toy
  monkeypatch.setattr(progress_lib, 'LOG_INTERVAL_SECONDS', 0.0)
  stream = io.StringIO()
  monkeypatch.setattr(progress_lib.sys, 'stderr', stream)
  config = config.replace(sampling={'sampler': 'pc', 'sampling_steps': 60})
  draw.draw_samples(config, state.score_model, state.sigmas, num=8, seed=0)
  counts = [line.split()[2] for line in stream.getvalue().splitlines()
            if line.startswith('sample [')]
  assert counts[-1] == '8/8'
  assert {'2/8', '4/8', '6/8'} <= set(counts), counts


def test_the_export_shows_each_signature_traced_and_the_writing(tmp_path, monkeypatch):
  """An image export took 97-112 s without a word: now a line per traced signature, and
  the heartbeat while the SavedModel is written."""
  from test_train_lib import tiny_config

  from ncsn_tf.runtime import devices
  from ncsn_tf.serving import export as export_lib
  monkeypatch.setattr(progress_lib, 'LOG_INTERVAL_SECONDS', 0.0)
  stream = io.StringIO()
  monkeypatch.setattr(progress_lib.sys, 'stderr', stream)
  config = tiny_config(tmp_path / 'run', train_steps=0)
  state = checkpoints.create_state(config, devices.make_strategy())
  export_lib.export(state.ema_model, config, state.sigmas)
  lines = [line for line in stream.getvalue().splitlines() if line.startswith('export [')]
  shown = ' '.join(lines)
  for name in ('traced=score', 'traced=score_sigma', 'traced=sample', 'stage=writing',
               'stage=written'):
    assert name in shown, lines
  assert lines[-1].split()[2] == '5/5', lines  # score, score_sigma, sample, serving_default; writing
