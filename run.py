"""ncsn_tf command line: python run.py --flagfile=tf_configs/toy_gmm.cfg [--mode=...].

Parses flags, builds a validated Config and dispatches on --mode. Invalid
configuration prints one line naming the flag and exits with status 2.

The console is quiet by default: unless TF_CPP_MIN_LOG_LEVEL is set in the
environment, TensorFlow's C++ runtime notices (oneDNN, CUDA probing, the absl
"before absl::InitializeLog()" lines, I0000/W0000/E0000 lines) and its Python
INFO logs are hidden, and the run logs one `devices: ...` line instead. Python
warnings, errors and this package's logs (--verbosity) still show; set
TF_CPP_MIN_LOG_LEVEL (0 shows everything) to get TensorFlow's own logs back.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile

# TF_CPP_MIN_LOG_LEVEL=3 hides the C++ logs that TensorFlow writes once it runs;
# what its libraries write while they load ignores it (_quiet_native_startup).
QUIET = 'TF_CPP_MIN_LOG_LEVEL' not in os.environ
if QUIET:
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'

from absl import app  # noqa: E402
from absl import logging  # noqa: E402

from ncsn_tf import config as config_lib  # noqa: E402
from ncsn_tf.config import flags as ncsn_flags  # noqa: E402

# A C++ log line (absl/TSL format: severity, date, time, thread, file:line]) or
# absl's notice that logging is not initialised yet.
_NATIVE_NOTICE = re.compile(
    r'(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
    r'|[IWE]\d{4} [\d:.]+ +\d+ [^ ]+:\d+\] )')


@contextlib.contextmanager
def _quiet_native_startup(enabled: bool):
  """Drops the C++ notices written to stderr while TensorFlow's libraries load.

  fd 2 goes to a temporary file for the block; afterwards every other line
  (Python warnings, tracebacks, fatal C++ errors) is written to the real stderr.
  """
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode('utf-8', errors='replace')
      sys.stderr.write(''.join(line for line in text.splitlines(keepends=True)
                               if not _NATIVE_NOTICE.match(line)))
      sys.stderr.flush()


class _HideTensorFlowInfo(std_logging.Filter):
  """Drops INFO records logged from TensorFlow's own modules (saver, SavedModel builder)."""

  def __init__(self, package_dir: str):
    super().__init__()
    self._prefix = package_dir + os.sep

  def filter(self, record) -> bool:
    return record.levelno > std_logging.INFO or not record.pathname.startswith(self._prefix)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value)')
  try:
    config = ncsn_flags.build_config(sys.argv)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  # Imported late: TensorFlow loads only for valid configs.
  with _quiet_native_startup(QUIET):
    from ncsn_tf.runtime import devices
    from ncsn_tf.training import loop as train_loop
    if config.train.num_cpu_replicas > 1:
      # Logical devices must exist before TensorFlow touches the CPU.
      devices.configure_cpu_replicas(config.train.num_cpu_replicas)
    from ncsn_tf import api
    from ncsn_tf.cli import modes
  if QUIET:  # TensorFlow's Python INFO logs too; its warnings still show.
    import tensorflow as tf
    tf.get_logger().setLevel(std_logging.WARNING)
    logging.get_absl_handler().addFilter(_HideTensorFlowInfo(os.path.dirname(tf.__file__)))
  try:
    # The registries' checks (network, SDE, sampler), now that TensorFlow is loaded.
    config = api.validate(config)
    logging.info('%s: mode=%s workdir=%s', config.name, config.mode, config.workdir)
    modes.MODES[config.mode](config)
  except config_lib.ConfigError as e:  # e.g. a workdir of a different configuration
    print(f'error: {e}', file=sys.stderr)
    return 2
  except train_loop.TrainingInterrupted as e:  # SIGTERM/SIGINT: saved, resumable
    print(f'stopped: {e}', file=sys.stderr)
    return 128 + int(e.signum)
  except (FileNotFoundError, train_loop.NonFiniteLossError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(main)
