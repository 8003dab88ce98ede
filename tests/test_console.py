"""The console of run.py and of library use: TensorFlow's C++ start-up notices are hidden
unless the user set TF_CPP_MIN_LOG_LEVEL (ncsn_tf/runtime/console.py, set up by
`import ncsn_tf`), and a run names its devices, strategy and precision."""

import os
import re
import subprocess
import sys
import warnings

from conftest import REPO_ROOT

from ncsn_tf.runtime import console

TOY = os.path.join(REPO_ROOT, 'tf_configs', 'toy_gmm.cfg')
NATIVE_LINE = re.compile(r'^([IWE]0000 |WARNING: All log messages before absl::InitializeLog)')
DEVICES_LINE = re.compile(r'\] devices: \d+ CPU.*; strategy: .+; precision: \w+')


def _env_without_log_level(**extra):
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return {**env, **extra}


def test_a_toy_run_prints_no_tensorflow_runtime_notices_and_names_its_devices(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'run.py'), f'--flagfile={TOY}',
       f'--workdir={tmp_path}/w', f'--export_dir={tmp_path}/e', '--train_steps=4',
       '--snapshot_freq=4', '--log_freq=2', '--num_samples=8', '--sample_batch_size=8',
       '--n_steps_each=2'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=_env_without_log_level())
  assert result.returncode == 0, result.stderr
  console = (result.stdout + result.stderr).splitlines()
  assert [line for line in console if NATIVE_LINE.match(line)] == [], result.stderr
  devices = [line for line in console if DEVICES_LINE.search(line)]
  assert len(devices) == 1, result.stderr
  assert 'strategy: default; precision: float32 (auto)' in devices[0]
  # TensorFlow's own Python INFO logs (checkpoint and SavedModel chatter) are hidden too.
  assert not any('Sharding callback' in line or 'fingerprint' in line for line in console)
  assert os.path.isdir(os.path.join(tmp_path, 'e', '1'))


def _log_level_seen_by_the_package(env):
  probe = ('import os, ncsn_tf; '
           'print(os.environ["TF_CPP_MIN_LOG_LEVEL"], ncsn_tf._console.quiet())')
  return subprocess.run([sys.executable, '-c', probe], capture_output=True, cwd=REPO_ROOT,
                        text=True, timeout=120, env=env, check=True).stdout.split()


def test_a_log_level_the_user_set_is_respected():
  assert _log_level_seen_by_the_package(_env_without_log_level(TF_CPP_MIN_LOG_LEVEL='0')) == \
      ['0', 'False']
  assert _log_level_seen_by_the_package(_env_without_log_level(TF_CPP_MIN_LOG_LEVEL='1')) == \
      ['1', 'False']
  assert _log_level_seen_by_the_package(_env_without_log_level()) == ['3', 'True']


def test_library_use_prints_no_tensorflow_notices():
  """`import ncsn_tf` before TensorFlow, then a sampler and an op: no I/W/E0000 lines (the
  E0000 cuInit line came at the first op), and TensorFlow still works."""
  script = ('import ncsn_tf\n'
            'from ncsn_tf.sampling import langevin\n'
            'import tensorflow as tf\n'
            'x = langevin.langevin_dynamics(lambda x: -x, tf.zeros([4, 2]), step_size=0.1,\n'
            '                               n_steps=3, seed=[0, 1])\n'
            'print(x.shape)\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, env=_env_without_log_level())
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '(4, 2)'
  assert result.stderr.strip() == '', result.stderr


def test_the_startup_filter_drops_only_native_notices(capfd):
  with console.quiet_native_output(True):
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written '
                b'to STDERR\n')
    os.write(2, b'I0000 00:00:1796162408.175029    3834 port.cc:153] oneDNN custom operations '
                b'are on.\n')
    os.write(2, b'E0000 00:00:1796162410.086498    3834 cuda_platform.cc:52] failed call to '
                b'cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n')
    os.write(2, b'F0000 00:00:1796162410.086498    3834 something.cc:1] a fatal error\n')
    os.write(2, b'a line of its own\n')
    # What Python's warnings module prints (to sys.stderr, fd 2, outside pytest).
    print(warnings.formatwarning('a Python warning', UserWarning, 'x.py', 1), end='',
          file=sys.__stderr__, flush=True)
  with console.quiet_native_output(False):
    os.write(2, b'I0000 00:00:1.0    1 port.cc:1] kept when not quiet\n')
  err = capfd.readouterr().err
  assert 'oneDNN' not in err and 'cuInit' not in err and 'InitializeLog' not in err
  assert 'a fatal error' in err and 'a line of its own' in err and 'a Python warning' in err
  assert 'kept when not quiet' in err
