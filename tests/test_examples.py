"""examples/: each script runs as a user runs it, at tiny scale.

compare_samplers.py gets conftest.py's tiny class-conditional digits run (2 steps) as
its --workdir, so it loads instead of training for 15 minutes, on its command line.
"""

import os
import runpy
import sys

from conftest import REPO_ROOT

EXAMPLE = os.path.join(REPO_ROOT, 'examples', 'compare_samplers.py')


def test_compare_samplers_compares_the_four_samplers_and_draws_a_class(digits_run, monkeypatch,
                                                                         capsys):
  workdir = digits_run
  monkeypatch.setattr(sys, 'argv', [EXAMPLE, f'--workdir={workdir}', '--num=10', '--label=3'])
  runpy.run_path(EXAMPLE, run_name='__main__')
  lines = capsys.readouterr().out.splitlines()
  for sampler in ('ald', 'pc', 'ode', 'heun'):
    assert any(line.startswith(f'{sampler} ') and 'Inception-Score analogue' in line
               for line in lines), lines
  assert any(line.startswith('label=3: the judge reads') for line in lines), lines
  assert os.path.isfile(os.path.join(workdir, 'compare_samplers', 'samples.png'))
