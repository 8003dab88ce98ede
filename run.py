"""ncsn_tf command line: python run.py --flagfile=tf_configs/toy_gmm.cfg [--mode=...].

Parses flags, builds a validated Config and dispatches on --mode. Invalid
configuration prints one line naming the flag and exits with status 2.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import logging  # noqa: E402

from ncsn_tf import config as config_lib  # noqa: E402
from ncsn_tf import flags as ncsn_flags  # noqa: E402


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value)')
  try:
    config = ncsn_flags.build_config(sys.argv)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if config.train.num_cpu_replicas > 1:
    # Logical devices must exist before TensorFlow touches the CPU.
    from ncsn_tf import train_lib
    train_lib.configure_cpu_replicas(config.train.num_cpu_replicas)
  from ncsn_tf import modes  # Imported late: TensorFlow loads only for valid configs.
  logging.info('%s: mode=%s workdir=%s', config.name, config.mode, config.workdir)
  from ncsn_tf import train_lib
  try:
    modes.MODES[config.mode](config)
  except config_lib.ConfigError as e:  # e.g. a workdir of a different configuration
    print(f'error: {e}', file=sys.stderr)
    return 2
  except train_lib.TrainingInterrupted as e:  # SIGTERM/SIGINT: saved, resumable
    print(f'stopped: {e}', file=sys.stderr)
    return 128 + int(e.signum)
  except (FileNotFoundError, train_lib.NonFiniteLossError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(main)
