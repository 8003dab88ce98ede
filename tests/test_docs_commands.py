"""Every shell command of the documentation works as written (`make docs-check`).

Collects every command of the fenced `bash` and `sh` blocks of README.md, docs/*.md
and the other pages (saved_models/, benchmarks/), and runs each, in page order,
as a user would after `make demo` and `source .venv/bin/activate`:

* in a scratch directory that holds the repository's code (run.py, ncsn_tf/,
  tf_configs/, the Makefile; linked) and its own runs/ and saved_models/, so
  nothing of the checkout changes;
* with `.venv` activated (the scratch's .venv links to this interpreter's
  environment, with an install stamp of its own so that `make demo` does not
  reinstall anything);
* with NCSN_TF_EXTRA_FLAGS set to ncsn_tf/cli/extra_flags.py SMOKE_FLAGS, which
  shrinks the work (steps, samples, examples) without changing the commands.

A command passes when it exits 0 without a traceback. A command marked in the
docs is skipped with the docs' reason: a block whose preceding line starts
"Not run by `make docs-check`:", or a command whose comment says "not run by
make docs-check: ...". A command whose comment says it runs "until stopped" (a
server) must still be running after SERVER_SECONDS, and is then stopped. A
command identical to one already run, comments aside (a page repeating another's
training command), is not run twice.

The commands depend on each other (training before sampling), so they run in
one process, in order: pages that train the runs other pages use come first
(PAGE_ORDER). Selected by the `docs_check` marker; `make test` leaves it out.
"""

import dataclasses
import glob
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from ncsn_tf.cli import extra_flags

pytestmark = pytest.mark.docs_check

#: Pages first in this order (their commands train what later pages use); every other
#: page with commands follows, sorted.
PAGE_ORDER = ['README.md', 'docs/toy.md', 'docs/sde.md', 'docs/likelihood.md',
              'docs/controllable.md', 'docs/images.md', 'docs/usage.md']
PAGE_GLOBS = ['README.md', 'docs/*.md', '*/README.md']
#: What the scratch directory links from the checkout (the code and what `make` reads).
LINKED = ['run.py', 'ncsn_tf', 'tf_configs', 'Makefile', 'setup.cfg', 'pyproject.toml', 'docs',
          'benchmarks']
BLOCK_MARKER = re.compile(r'^Not run by `make docs-check`: (.+)$', re.S)
COMMAND_MARKER = re.compile(r'not run by make docs-check: ([^)]+)')
SERVER_MARKER = re.compile(r'until stopped')
#: A documented command's time limit, and how long a server must stay up.
COMMAND_TIMEOUT = 900
SERVER_SECONDS = 20


@dataclasses.dataclass(frozen=True)
class Command:
  page: str
  line: int
  text: str
  skip: str | None  # The docs' reason, for a marked command.

  @property
  def id(self) -> str:
    return f'{self.page}:{self.line}'

  @property
  def words(self) -> tuple:
    """The command as the shell reads it, comments dropped: two pages' "train first"
    lines with different comments are one command."""
    return tuple(shlex.split(self.text, comments=True))


def _pages() -> list:
  found = set()
  for pattern in PAGE_GLOBS:
    found |= {os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, pattern))}
  return [p for p in PAGE_ORDER if p in found] + sorted(found - set(PAGE_ORDER))


def _complete(text: str) -> bool:
  """Whether `text` is a whole command: no trailing backslash, every quote closed."""
  if text.rstrip().endswith('\\'):
    return False
  try:
    shlex.split(text, comments=True)
  except ValueError:  # "No closing quotation": a quoted argument goes on.
    return False
  return True


def _paragraph_before(lines: list, k: int) -> str:
  """The paragraph that ends right above line k (blank lines skipped), joined by spaces."""
  j = k - 1
  while j >= 0 and not lines[j].strip():
    j -= 1
  end = j
  while j >= 0 and lines[j].strip() and not lines[j].startswith('```'):
    j -= 1
  return ' '.join(line.strip() for line in lines[j + 1:end + 1])


def commands_of(page: str) -> list:
  """The commands of the page's bash/sh blocks, each with its line and the docs' skip reason."""
  lines = open(os.path.join(REPO_ROOT, page), encoding='utf-8').read().splitlines()
  found, k = [], 0
  while k < len(lines):
    fence = re.match(r'^```(bash|sh)\s*$', lines[k])
    if not fence:
      k += 1
      continue
    block_marker = BLOCK_MARKER.match(_paragraph_before(lines, k))
    k += 1
    pending, start = '', None
    while k < len(lines) and not lines[k].startswith('```'):
      line = lines[k]
      if not pending and (not line.strip() or line.lstrip().startswith('#')):
        k += 1
        continue
      pending, start = (pending + '\n' + line if pending else line), start or k + 1
      if _complete(pending):
        marker = COMMAND_MARKER.search(pending)
        skip = block_marker.group(1) if block_marker else marker.group(1) if marker else None
        found.append(Command(page, start, pending, skip))
        pending, start = '', None
      k += 1
    assert not pending, f'{page}:{start}: an unfinished command at the end of its block'
    k += 1
  return found


COMMANDS = [c for page in _pages() for c in commands_of(page)]


def test_the_docs_have_commands_and_every_skip_gives_a_reason():
  assert any(c.text.startswith('make demo') for c in COMMANDS)
  assert len([c for c in COMMANDS if not c.skip]) >= 20, [c.id for c in COMMANDS]
  assert all(c.skip is None or len(c.skip) > 5 for c in COMMANDS)


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
  """A directory a user's checkout looks like after `make`: the code linked, its own runs/,
  saved_models/ and .venv (linked to this environment, with a fresh install stamp)."""
  root = tmp_path_factory.mktemp('docs_check')
  for name in LINKED:
    os.symlink(os.path.join(REPO_ROOT, name), root / name)
  (root / 'runs').mkdir()
  (root / 'saved_models').mkdir()
  venv = root / '.venv'
  venv.mkdir()
  for name in os.listdir(sys.prefix):
    if name != '.installed':
      os.symlink(os.path.join(sys.prefix, name), venv / name)
  (venv / '.installed').touch()  # Newer than setup.cfg: `make demo` installs nothing.
  # Guard: the install step must be up to date here, or `make demo` would pip-install the
  # scratch directory into this (shared) environment.
  assert subprocess.run(['make', '-q', '.venv/.installed'], cwd=root).returncode == 0
  return root


def _environment() -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env[extra_flags.ENV] = extra_flags.SMOKE_FLAGS
  return env


def _shell(command: Command) -> list:
  return ['bash', '-c', f'set -e\nsource .venv/bin/activate\n{command.text}']


_RUN = {}  # Command.words -> the id of the command that ran them


def _run_server(command: Command, cwd) -> None:
  process = subprocess.Popen(_shell(command), cwd=cwd, env=_environment(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
  try:
    time.sleep(SERVER_SECONDS)
    alive = process.poll() is None
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGTERM)  # The group this test started, and only it.
    output = process.communicate(timeout=60)[0]
  assert alive, f'{command.id}: exited {process.returncode} before being stopped:\n{output[-3000:]}'


@pytest.mark.parametrize('command', COMMANDS, ids=[c.id for c in COMMANDS])
def test_the_documented_command_works_as_written(command, scratch):
  if command.skip:
    pytest.skip(f'the docs say: {command.skip}')
  if command.words in _RUN:
    pytest.skip(f'the same command ran at {_RUN[command.words]}')
  if SERVER_MARKER.search(command.text):
    _run_server(command, scratch)
  else:
    result = subprocess.run(_shell(command), cwd=scratch, env=_environment(), text=True,
                            capture_output=True, timeout=COMMAND_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'{command.id}: {command.text}\n{output[-4000:]}'
    assert 'Traceback' not in output, f'{command.id}: {command.text}\n{output[-4000:]}'
  _RUN[command.words] = command.id
