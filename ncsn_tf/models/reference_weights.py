"""Weights of the official PyTorch NCSN (ermongroup/ncsn) in CondRefineNetDilated.

The reference saves `CondRefineNetDilated.state_dict()` (under
`torch.nn.DataParallel`, so every name starts with `module.`). Our Keras model has
the same modules under the same names, so a checkpoint converts by name:

    import torch  # only to read the .pth file
    states = torch.load('checkpoint.pth', map_location='cpu')
    arrays = {k: v.numpy() for k, v in states[0].items()}  # [0]: the score net
    model = CondRefineNetDilated(ngf=128, num_classes=10, image_size=32, channels=3)
    model.build_for()
    assign_reference_weights(model, arrays)

Layouts: a PyTorch Conv2d weight is [out, in, kh, kw] and a Keras kernel
[kh, kw, in, out]; a CIN++ `embed.weight` is [L, 3C] holding γ | α | β side by side.
tests/test_refinenet_reference.py checks that the converted model reproduces the
reference's own outputs.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

_DATA_PARALLEL_PREFIX = 'module.'
# A CondRCUBlock attribute of the reference: '{block}_{stage}_{norm|conv}', 1-based.
_RCU_ATTRIBUTE = re.compile(r'(\d+)_(\d+)_(norm|conv)')


def assign_reference_weights(model, state_dict: Mapping[str, np.ndarray]) -> None:
  """Copies a reference state_dict (name -> numpy array) into a built `model`.

  Args:
    model: a built `CondRefineNetDilated` with the checkpoint's ngf, image
      channels and one CIN++ row per level (`conditional_norm=True`, the
      reference's model).
    state_dict: every parameter of the reference model by its PyTorch name,
      with or without DataParallel's `module.` prefix.

  Raises:
    ValueError: a name the model does not have, a shape that does not match,
      or a model variable the state_dict leaves unset. Nothing is assigned
      unless every entry matches.
  """
  assignments = []
  for name, value in state_dict.items():
    torch_name = name[len(_DATA_PARALLEL_PREFIX):] if name.startswith(_DATA_PARALLEL_PREFIX) else name
    assignments.extend(_targets(model, torch_name, np.asarray(value)))
  _check_complete(model, assignments)
  for variable, value in assignments:
    variable.assign(value.astype(variable.dtype))


def _targets(model, torch_name, value):
  """[(keras variable, value in Keras layout)] for one reference parameter."""
  *module_path, leaf = torch_name.split('.')
  if module_path and module_path[-1] == 'embed' and leaf == 'weight':
    norm = _layer(model, module_path[:-1], torch_name)
    tables = [norm.gamma, norm.alpha] + ([norm.beta] if norm.beta is not None else [])
    if value.ndim != 2 or value.shape[1] % len(tables):
      raise ValueError(f'{torch_name}: shape {value.shape} is not [levels, {len(tables)}·C]')
    parts = np.split(value, len(tables), axis=1)
    return [_checked(variable, part, torch_name) for variable, part in zip(tables, parts)]
  layer = _layer(model, module_path, torch_name)
  if leaf == 'weight' and value.ndim == 4:
    return [_checked(layer.kernel, value.transpose(2, 3, 1, 0), torch_name)]
  if leaf == 'bias' and getattr(layer, 'bias', None) is not None:
    return [_checked(layer.bias, value, torch_name)]
  raise ValueError(f'{torch_name}: no matching variable in the model')


def _layer(model, path, torch_name):
  """Follows a reference module path ('refine2.adapt_convs.0.1_2_norm') to our layer."""
  layer = model
  for part in path:
    rcu = _RCU_ATTRIBUTE.fullmatch(part)
    try:
      if rcu:  # CondRCUBlock keeps norms[block][stage] and convs[block][stage].
        block, stage, kind = int(rcu.group(1)) - 1, int(rcu.group(2)) - 1, rcu.group(3)
        layer = getattr(layer, kind + 's')[block][stage]
      elif part.isdigit():
        layer = layer[int(part)]
      else:
        layer = getattr(layer, part)
    except (AttributeError, IndexError, TypeError):
      raise ValueError(f'{torch_name}: the model has no module {".".join(path)}') from None
  return layer


def _checked(variable, value, torch_name):
  if tuple(variable.shape) != value.shape:
    raise ValueError(f'{torch_name}: shape {value.shape} does not match the model\'s '
                     f'{tuple(variable.shape)} (another ngf, channel count or number of levels?)')
  return variable, value


def _check_complete(model, assignments):
  assigned = [id(variable) for variable, _ in assignments]
  unique = set(assigned)
  if len(unique) != len(assigned):
    raise ValueError('the state_dict sets some variables twice')
  missing = [v.path for v in model.weights if id(v) not in unique]
  if missing:
    raise ValueError(f'the state_dict leaves {len(missing)} model variable(s) unset, '
                     f'e.g. {missing[0]}')
