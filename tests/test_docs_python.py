"""Every ```python block of README.md and docs/*.md runs as written, or says why it does not.

A block runs unless the line before its fence is `<!-- not-run: <reason> -->`.
A page's blocks run in order in one namespace (later blocks use earlier
names), in a fresh directory that holds what the pages name: `tf_configs/`,
`runs/digits` and `runs/shapes_sde` (conftest.py's tiny runs) and
`checkpoint.pth` (tests/reference's official-style checkpoint). What a page
trains or draws is shrunk by the text substitutions of REDUCTIONS, each of
which must still match its page, so a page cannot drift from its test
unnoticed.
"""

import os
import re

import pytest
from conftest import REPO_ROOT
from conftest import TINY_TOY_SDE

PAGES = ['README.md'] + sorted(os.path.join('docs', name)
                               for name in os.listdir(os.path.join(REPO_ROOT, 'docs'))
                               if name.endswith('.md'))
BLOCK = re.compile(r'(?:<!-- not-run: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)```', re.S)
#: The official-style checkpoint's network: tf_configs/cifar10.cfg at ngf 4 and 4 levels.
TINY_PAPER = "config=ncsn_tf.Config.from_flagfile('cifar10', ngf=4, num_scales=4)"

#: page -> [(text, its shrunk replacement)]: fewer samples, steps and points; tiny runs.
REDUCTIONS = {
    'README.md': [
        ("workdir='runs/toy_gmm_sde')", "workdir='runs/toy_gmm_sde', **TINY_TOY_SDE)"),
    ],
    'docs/python.md': [
        ("workdir='runs/toy_gmm_sde')", "workdir='runs/toy_gmm_sde', **TINY_TOY_SDE)"),
        ('2000', '64'),
        ("'sampling_steps': 500", "'sampling_steps': 5"),
        ("'sampling_steps': 18", "'sampling_steps': 4"),
        ('sampling_steps=100', 'sampling_steps=5'),
        ('sampling_steps=200', 'sampling_steps=5'),
        ("config='cifar10')", TINY_PAPER + ')'),
        ('paper.sample(16, seed=0)', 'paper.sample(2, seed=0, n_steps_each=1)'),
    ],
    'docs/images.md': [
        ("config='cifar10')", TINY_PAPER + ')'),
        ('paper.sample(16, seed=0)', 'paper.sample(2, seed=0, n_steps_each=1)'),
    ],
    'docs/controllable.md': [
        ('image_size=32, num_images=8', 'image_size=16, num_images=2'),
        ('sampling_steps=500', 'sampling_steps=5'),
    ],
}
#: What the pages name, and the session fixture (or repository file) that stands in for it.
STAND_INS = {'runs/digits': 'digits_run', 'runs/shapes_sde': 'shapes_run',
             'checkpoint.pth': os.path.join('tests', 'reference', 'checkpoint_zip.pth')}


def _blocks(page: str) -> list:
  """[(code, reason or None)] of the page's python blocks, in order."""
  text = open(os.path.join(REPO_ROOT, page), encoding='utf-8').read()
  return [(m.group('code'), m.group('reason')) for m in BLOCK.finditer(text)]


def _runnable(page: str) -> list:
  """The page's runnable blocks with its reductions applied."""
  blocks = [code for code, reason in _blocks(page) if reason is None]
  for old, new in REDUCTIONS.get(page, []):
    blocks = [code.replace(old, new) for code in blocks]
  return blocks


def test_every_block_runs_or_gives_its_reason():
  seen = 0
  for page in PAGES:
    for code, reason in _blocks(page):
      seen += 1
      assert reason is None or len(reason.split()) >= 4, f'{page}: a not-run block needs a reason'
    runnable = [code for code, reason in _blocks(page) if reason is None]
    for old, _ in REDUCTIONS.get(page, []) if runnable else []:
      assert any(old in code for code in runnable), (
          f'{page} no longer has {old!r}: update REDUCTIONS')
  assert seen >= 10 and set(REDUCTIONS) <= set(PAGES)


def _workspace(tmp_path, code: str, request):
  """A directory with what `code` names: tf_configs/, the tiny runs, checkpoint.pth."""
  os.symlink(os.path.join(REPO_ROOT, 'tf_configs'), tmp_path / 'tf_configs')
  (tmp_path / 'runs').mkdir()
  for name, stand_in in STAND_INS.items():
    if name not in code:
      continue
    if stand_in.endswith('_run'):
      target = request.getfixturevalue(stand_in)
    else:
      target = os.path.join(REPO_ROOT, stand_in)
    os.symlink(target, tmp_path / name)


@pytest.mark.parametrize('page', [p for p in PAGES if _runnable(p)])
def test_python_blocks_run(page, tmp_path, monkeypatch, request):
  blocks = _runnable(page)
  _workspace(tmp_path, '\n'.join(blocks), request)
  monkeypatch.chdir(tmp_path)
  namespace = {'__name__': '__main__', 'TINY_TOY_SDE': TINY_TOY_SDE}
  for k, code in enumerate(blocks):
    exec(compile(code, f'{page}, python block {k + 1}', 'exec'), namespace)  # pylint: disable=exec-used
