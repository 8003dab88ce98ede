"""The documentation holds together: links resolve, named paths exist, the README
stays short, flagfile comments stay one line, and the serving contract written in
the READMEs is the one ncsn_tf/export.py states.

Pure text checks: no TensorFlow, no network.
"""

import glob
import os
import re

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 250


def _read(relpath: str) -> str:
  with open(os.path.join(REPO_ROOT, relpath), encoding='utf-8') as f:
    return f.read()


def _markdown_files() -> list[str]:
  paths = ['README.md', *sorted(glob.glob('docs/*.md', root_dir=REPO_ROOT)),
           *sorted(glob.glob('benchmarks/*.md', root_dir=REPO_ROOT))]
  return [p for p in paths if os.path.exists(os.path.join(REPO_ROOT, p))]


def _strip_code(text: str) -> str:
  """The text without fenced code blocks and inline code (links there are not links)."""
  text = re.sub(r'^(```|~~~).*?^\1[^\n]*$', '', text, flags=re.M | re.S)
  return re.sub(r'`[^`\n]*`', '', text)


_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def _links(text: str) -> list[str]:
  return _LINK.findall(_strip_code(text))


def github_slug(heading: str) -> str:
  """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
  heading = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link's text only
  heading = heading.replace('`', '').strip().lower()
  heading = re.sub(r'[^\w\- ]', '', heading)
  return heading.replace(' ', '-')


def anchors(text: str) -> set[str]:
  """Every heading anchor of a markdown text, with GitHub's -1, -2 suffixes for repeats."""
  seen: dict[str, int] = {}
  out = set()
  body = re.sub(r'^(```|~~~).*?^\1[^\n]*$', '', text, flags=re.M | re.S)
  for match in re.finditer(r'^#{1,6}\s+(.+?)\s*#*\s*$', body, flags=re.M):
    slug = github_slug(match.group(1))
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    out.add(slug if count == 0 else f'{slug}-{count}')
  return out


def test_github_slug_matches_githubs_rules():
  assert github_slug('Shapes: the offline image run') == 'shapes-the-offline-image-run'
  assert github_slug("Why shapes.cfg's U-Net has no normalisation") == \
      'why-shapescfgs-u-net-has-no-normalisation'
  assert github_slug('1. Get the FID Inception network (once)') == '1-get-the-fid-inception-network-once'
  assert github_slug('Measuring "recognisably shapes"') == 'measuring-recognisably-shapes'
  assert github_slug('`--mode=eval` and σ') == '--modeeval-and-σ'
  assert anchors('# A\n## A\n```\n# not a heading\n```\n') == {'a', 'a-1'}


@pytest.mark.parametrize('doc', _markdown_files())
def test_every_relative_link_resolves(doc):
  text = _read(doc)
  broken = []
  for target in _links(text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
    full = os.path.join(REPO_ROOT, resolved)
    if not os.path.exists(full):
      broken.append(f'{target} (no file {resolved})')
    elif anchor and resolved.endswith('.md') and anchor not in anchors(_read(resolved)):
      broken.append(f'{target} (no heading #{anchor} in {resolved})')
  assert not broken, f'{doc}: broken links: {broken}'


def test_readme_links_each_docs_page():
  linked = {os.path.normpath(t.partition('#')[0]) for t in _links(_read('README.md'))}
  pages = set(glob.glob('docs/*.md', root_dir=REPO_ROOT))
  assert not pages - linked, f'README.md does not link {sorted(pages - linked)}'


def test_readme_is_short():
  lines = _read('README.md').count('\n')
  assert lines <= README_MAX_LINES, f'README.md has {lines} lines; the limit is {README_MAX_LINES}'


# A repository path as code, docstrings and error messages name it: a top-level
# folder of this repository, then a file with one of these extensions.
_REPO_PATH = re.compile(
    r'(?<![\w/.-])((?:docs|tf_configs|saved_models|benchmarks|ncsn_tf|tests)/[\w./-]*\.(?:md|cfg|py))\b'
    r'|(?<![\w/.-])(README\.md)\b')
# Files that runs write (never committed): naming them is not a broken reference.
_GENERATED = ('benchmarks/results/',)


def _sources() -> list[str]:
  files = ['run.py', *glob.glob('ncsn_tf/**/*.py', root_dir=REPO_ROOT, recursive=True),
           *glob.glob('benchmarks/*.py', root_dir=REPO_ROOT)]
  return sorted(files)


@pytest.mark.parametrize('kind', ['code', 'docs'])
def test_paths_named_in_code_and_docs_exist(kind):
  """Every repository path that code (docstrings, error messages, comments), the
  flagfiles or the docs name exists."""
  files = _sources() + sorted(glob.glob('tf_configs/*.cfg', root_dir=REPO_ROOT)) \
      if kind == 'code' else _markdown_files()
  missing = []
  for source in files:
    for number, line in enumerate(_read(source).splitlines(), 1):
      for match in _REPO_PATH.finditer(line):
        path = (match.group(1) or match.group(2)).rstrip('.')
        if path.startswith(_GENERATED):
          continue
        if not os.path.exists(os.path.join(REPO_ROOT, path)):
          missing.append(f'{source}:{number}: {path}')
  assert not missing, f'paths named in {kind} that do not exist:\n' + '\n'.join(missing)


def test_the_path_pattern_finds_what_error_messages_name():
  line = "'see docs/operating.md'; tf_configs/shapes.cfg, /abs/docs/x.md, saved_models/<name>"
  assert [m.group(1) for m in _REPO_PATH.finditer(line)] == ['docs/operating.md',
                                                            'tf_configs/shapes.cfg']


@pytest.mark.parametrize('cfg', sorted(glob.glob('tf_configs/*.cfg', root_dir=REPO_ROOT)))
def test_flagfile_comments_are_one_line(cfg):
  """Each setting's comment is at most one line (the file's header at most two):
  the history of how a value was found belongs in docs/."""
  lines = _read(cfg).splitlines()
  first_flag = next(i for i, line in enumerate(lines) if line.startswith('--'))
  assert first_flag <= 2, f'{cfg}: a header of {first_flag} comment lines (at most 2)'
  run = 0
  for number, line in enumerate(lines[first_flag:], first_flag + 1):
    run = run + 1 if line.lstrip().startswith('#') else 0
    assert run <= 1, f'{cfg}:{number}: a comment of more than one line'


@pytest.mark.parametrize('cfg', sorted(glob.glob('tf_configs/*.cfg', root_dir=REPO_ROOT)))
def test_flagfile_comments_cite_docs_sections_that_exist(cfg):
  """A comment citing `docs/page.md, "Section"` names a heading of that page."""
  for page, section in re.findall(r'(docs/[\w.-]+\.md), "([^"]+)"', _read(cfg)):
    assert github_slug(section) in anchors(_read(page)), f'{cfg}: no section "{section}" in {page}'



def _shipped_text_files() -> list[str]:
  """Everything the project ships that a reader reads: code, tests, flagfiles, docs, build."""
  files = _sources() + _markdown_files() + ['Makefile', '.ci/run', 'setup.cfg']
  for pattern in ('tests/*.py', 'tf_configs/*.cfg', '*/README.md'):
    files += glob.glob(pattern, root_dir=REPO_ROOT)
  return sorted(set(files))


def test_nothing_cites_a_file_outside_the_repository():
  """A page, comment or docstring that names a note (README.md, RESULTS.md: upper-case
  markdown names; lower-case ones are files that runs write) names one of the repository's:
  a design note kept elsewhere is no evidence a reader can check. Nothing points into a
  directory beside the checkout."""
  ours = {os.path.basename(p) for p in glob.glob('**/*.md', root_dir=REPO_ROOT, recursive=True)}
  outside = '../' + 'shared'
  found = []
  for source in _shipped_text_files():
    for number, line in enumerate(_read(source).splitlines(), 1):
      names = set(re.findall(r'(?<![\w/-])([A-Z][A-Z0-9_-]*\.md)\b', line)) - ours
      if names or outside in line:
        found.append(f'{source}:{number}: {line.strip()}')
  assert not found, 'citations of files outside the repository:\n' + '\n'.join(found)
