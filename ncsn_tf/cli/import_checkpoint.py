"""Turns an official ermongroup/ncsn `checkpoint.pth` into a workdir that every mode runs on.

    python -m ncsn_tf.cli.import_checkpoint checkpoint.pth --flagfile=tf_configs/cifar10.cfg \
        --workdir=runs/ncsn_cifar10

writes <workdir>/config.json and a checkpoint of the paper's network
(ncsn_tf/pipeline/official.py); then `python run.py --flagfile=tf_configs/cifar10.cfg
--workdir=runs/ncsn_cifar10 --mode=sample` (or eval, inpaint, export) uses it
(docs/images.md). Flags after the file are run.py's. Prints the workdir; a bad
flag or a checkpoint of another network prints one line and exits with status 2.
"""

import sys

from ncsn_tf import config as config_lib
from ncsn_tf.pipeline import official

USAGE = ('usage: python -m ncsn_tf.cli.import_checkpoint checkpoint.pth '
         '--flagfile=tf_configs/cifar10.cfg [--workdir=runs/ncsn_cifar10] [--flag=value ...]')


def main(argv) -> int:
  if not argv or argv[0].startswith('-'):
    print(USAGE, file=sys.stderr)
    return 2
  try:
    config = config_lib.flagfile.from_argv(argv[1:])
    print(official.write_workdir(argv[0], config))
  except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
