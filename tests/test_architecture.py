"""The house's shape, from the code's own imports: layers, no circles, small modules.

docs/architecture.md lists the layers top to bottom; this test reads that list
and checks the code against it: every import of a package module (at module
level or inside a function) goes to the same layer or one above, there is no
import circle, no module has more than 650 lines, at most 8 modules sit at the
top of ncsn_tf/, and at most 3 imports of the package happen inside functions,
each with a comment on its line saying why.
"""

import ast
import os
import re

from conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, 'ncsn_tf')
MAX_LINES = 650
MAX_TOP_LEVEL = 8
MAX_FUNCTION_LEVEL = 3


def _modules() -> dict:
  """{dotted name: path} of every module of the package (a package is its __init__)."""
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        dotted = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, '.')
        found[dotted[:-len('.__init__')] if dotted.endswith('.__init__') else dotted] = path
  return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
  while name and name not in MODULES:
    name = name.rpartition('.')[0]
  return name or None


def _imports(path: str):
  """[(target module, line number, inside a function)] of the package's imports in `path`."""
  tree = ast.parse(open(path, encoding='utf-8').read())
  inside = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      inside |= {id(n) for n in ast.walk(node)}
  found = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('ncsn_tf'):
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in MODULES else node.module
               for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names if a.name.startswith('ncsn_tf')]
    for name in names:
      target = _resolve(name)
      if target:
        found.append((target, node.lineno, id(node) in inside))
  return found


EDGES = {module: _imports(path) for module, path in MODULES.items()}


def _layers() -> list:
  """The layers of docs/architecture.md's first code block, top first, as dotted prefixes."""
  text = open(os.path.join(REPO_ROOT, 'docs', 'architecture.md'), encoding='utf-8').read()
  block = re.search(r'```\n(.*?)```', text, re.S).group(1)
  layers = []
  for line in block.splitlines():
    if not line or line[0] == ' ':
      continue
    names = re.match(r'([\w/.]+(?:, [\w/.]+)*)', line).group(1).split(', ')
    layers.append(tuple(n.rstrip('/').removesuffix('.py').replace('/', '.') for n in names))
  return layers


def _layer_of(module: str, layers: list) -> int:
  relative = module.removeprefix('ncsn_tf.')
  best, best_length = None, -1
  for index, names in enumerate(layers):
    for name in names:
      if (relative == name or relative.startswith(name + '.')) and len(name) > best_length:
        best, best_length = index, len(name)
  assert best is not None, f'{module} is in no layer of docs/architecture.md'
  return best


def test_imports_run_down_the_layers_of_the_architecture_page():
  layers = _layers()
  assert len(layers) >= 10, layers
  upward = []
  for module, imports in EDGES.items():
    if module == 'ncsn_tf':
      continue  # The package's own __init__ (the public names) may reach any layer.
    for target, line, _ in imports:
      if target not in ('ncsn_tf', module) and _layer_of(target, layers) > _layer_of(module, layers):
        upward.append(f'{module}:{line} -> {target}')
  assert not upward, 'imports that run up the layers: ' + '; '.join(upward)


def test_there_is_no_import_circle():
  graph = {m: {t for t, _, _ in EDGES[m] if t != m} for m in MODULES}
  index, low, stack, on_stack, circles = {}, {}, [], set(), []

  def visit(v):  # Tarjan's strongly connected components.
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        circles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  assert not circles, circles


def test_modules_are_small_and_few_at_the_top():
  long = {m: n for m, p in MODULES.items()
          if (n := open(p, encoding='utf-8').read().count('\n')) > MAX_LINES}
  assert not long, long
  top = [f for f in os.listdir(PACKAGE) if f.endswith('.py') and f != '__init__.py']
  assert len(top) <= MAX_TOP_LEVEL, sorted(top)


def test_imports_inside_functions_are_few_and_say_why():
  inside = []
  for module, imports in EDGES.items():
    lines = open(MODULES[module], encoding='utf-8').read().splitlines()
    for _, line, in_function in imports:
      if in_function:
        inside.append((module, line, '#' in lines[line - 1]))
  assert len(inside) <= MAX_FUNCTION_LEVEL, inside
  assert all(commented for _, _, commented in inside), inside
