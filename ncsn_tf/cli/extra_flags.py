"""NCSN_TF_EXTRA_FLAGS: flags appended to every run.py command line.

    NCSN_TF_EXTRA_FLAGS="--train_steps=20 --num_samples=16" python run.py --flagfile=...

The flags come after the command's own, so they override it (absl keeps a
flag's last value). The documentation's check (`make docs-check`,
tests/test_docs_commands.py) runs every documented command as written with
`SMOKE_FLAGS` here, which shrinks the work (steps, samples, examples) without
changing what a command does. TensorFlow-free: run.py applies it before
parsing the flags.
"""

import os
import shlex
import sys

ENV = 'NCSN_TF_EXTRA_FLAGS'

#: What the docs check appends to every command: a few training steps, few and short
#: chains, few examples, loose solver tolerances. Every flag here is resume-safe
#: (config/schema.py), so commands on one workdir stay compatible with each other.
SMOKE_FLAGS = (
    '--train_steps=24 --train_minutes=0 --snapshot_freq=12 --log_freq=6 --heldout_batches=1 '
    '--summary_samples=2 --num_samples=16 --sample_batch_size=16 --n_steps_each=2 '
    '--sampling_steps=4 --ode_rtol=1e-2 --ode_atol=1e-2 --num_snapshots=2 '
    '--num_inpaint_images=2 --inpaint_completions=2 --likelihood_examples=8 '
    '--eval_batch_size=8 --eval_samples=0')

#: Flags that would change what a command is rather than how much work it does.
_REFUSED = ('--flagfile', '--mode', '--workdir', '--export_dir', '--config_name')


def parse(raw: str) -> list:
  """The flags of a NCSN_TF_EXTRA_FLAGS value; ValueError (one line) on anything else."""
  flags = shlex.split(raw)
  for flag in flags:
    if not flag.startswith('--'):
      raise ValueError(f'{ENV}: {flag!r} is not a flag (--name=value)')
    if flag.split('=', 1)[0] in _REFUSED:
      raise ValueError(f'{ENV}: {flag.split("=", 1)[0]} cannot be overridden here; it changes '
                       'what the command does, not how much work it does')
  return flags


def argv_with_extra_flags(argv, environ=None) -> list:
  """argv with the flags of NCSN_TF_EXTRA_FLAGS appended (and one line saying so);
  exits with status 2 and one line if the variable holds something else."""
  raw = (os.environ if environ is None else environ).get(ENV, '').strip()
  if not raw:
    return list(argv)
  try:
    extra = parse(raw)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'{ENV}: appending {" ".join(extra)}', file=sys.stderr)
  return [*argv, *extra]

