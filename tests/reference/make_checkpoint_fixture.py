"""Writes small official-style NCSN checkpoints, for tests/test_torch_checkpoint.py.

Run in a Python that has torch and numpy, with a checkout of ermongroup/ncsn
(its models/cond_refinenet_dilated.py and losses/dsm.py are imported):

    <python with torch> tests/reference/make_checkpoint_fixture.py /path/to/ncsn [out_dir]

(out_dir defaults to this script's folder.)

It builds the reference CondRefineNetDilated for 32x32x3 images with ngf 4 and
4 levels (make_refinenet_outputs.py's network), wraps it in torch.nn.DataParallel as the
official runner does, draws every parameter far from its initial value (as
make_refinenet_outputs.py), takes two Adam steps on the annealed DSM loss
(lr 1e-3, the official config's optimizer), and saves
`[score.state_dict(), optimizer.state_dict()]` exactly as the runner does:

  checkpoint_legacy.pth  torch.save's legacy format, as the 2019 checkpoints;
  checkpoint_zip.pth     torch.save's zip format (PyTorch >= 1.6);
  views_legacy.pth,      a dict of tensors that share storages (transposed,
  views_zip.pth          sliced, expanded, a Parameter) and of every element
                         type the reader supports, plus plain Python values;
  checkpoint_outputs.npz torch's own numpy arrays for all of the above (the
                         state_dict's and Adam's moments each concatenated in
                         saved order under 'torch/*_flat', names, shapes, steps
                         and param_groups as JSON in 'torch/json', the views
                         under 'views/<key>'), random images 'x' in [0, 1]
                         (NHWC), levels, and the reference model's scores
                         'score' (NHWC), evaluated in float64 with the saved
                         float32 parameters and rounded to float32.
"""

import copy
import json
import os
import sys
import types

import numpy as np
import torch

NGF, LEVELS, BATCH, SIZE, CHANNELS = 4, 4, 2, 32, 3
HERE = os.path.dirname(os.path.abspath(__file__))  # main() may point it elsewhere


def _official_checkpoint(reference_checkout):
  sys.path.insert(0, reference_checkout)
  # pylint: disable=import-outside-toplevel
  from models.cond_refinenet_dilated import CondRefineNetDilated
  from losses.dsm import anneal_dsm_score_estimation
  config = types.SimpleNamespace(
      data=types.SimpleNamespace(logit_transform=False, image_size=SIZE, channels=CHANNELS),
      model=types.SimpleNamespace(ngf=NGF, num_classes=LEVELS))
  torch.manual_seed(0)
  model = CondRefineNetDilated(config)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith('embed.weight'):
        param.copy_(1.0 + 0.3 * torch.randn_like(param))
      elif name.endswith('bias'):
        param.copy_(0.1 * torch.randn_like(param))
  score = torch.nn.DataParallel(model)  # on a CPU-only machine it just calls the model
  optimizer = torch.optim.Adam(score.parameters(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999),
                               amsgrad=False)
  sigmas = torch.tensor(np.exp(np.linspace(np.log(1.0), np.log(0.01), LEVELS))).float()
  for _ in range(2):  # the runner's training step
    images = torch.rand(4, CHANNELS, SIZE, SIZE)
    labels = torch.randint(0, LEVELS, (4,))
    loss = anneal_dsm_score_estimation(score, images, labels, sigmas, 2.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  states = [score.state_dict(), optimizer.state_dict()]
  for entry in states[1]['state'].values():
    # PyTorch 1.0/1.1's Adam, which wrote the official checkpoints, kept 'step' as
    # an int; today's keeps a 0-d tensor per parameter (0-d tensors are in views_*.pth).
    entry['step'] = int(entry['step'])
  torch.save(states, os.path.join(HERE, 'checkpoint_legacy.pth'),
             _use_new_zipfile_serialization=False)
  torch.save(states, os.path.join(HERE, 'checkpoint_zip.pth'))

  # torch's own arrays, each kind concatenated in the saved order (an npz entry
  # per tensor would cost more in headers than the data).
  score_state, optimizer_state = states
  moments = [optimizer_state['state'][i] for i in sorted(optimizer_state['state'])]
  arrays = {
      'torch/state_flat': np.concatenate([t.numpy().ravel() for t in score_state.values()]),
      'torch/exp_avg_flat': np.concatenate([m['exp_avg'].numpy().ravel() for m in moments]),
      'torch/exp_avg_sq_flat': np.concatenate([m['exp_avg_sq'].numpy().ravel() for m in moments]),
      'torch/json': np.array(json.dumps({
          'state_names': list(score_state),
          'state_shapes': [list(t.shape) for t in score_state.values()],
          'optimizer_steps': {str(i): s['step'] for i, s in optimizer_state['state'].items()},
          'param_groups': optimizer_state['param_groups'],
      })),
  }

  rng = np.random.default_rng(0)
  x = rng.random((BATCH, CHANNELS, SIZE, SIZE)).astype(np.float32)
  levels = np.array([0, LEVELS - 1])
  reference = copy.deepcopy(model).double()  # the saved float32 values, evaluated in float64
  with torch.no_grad():
    out = reference(torch.tensor(x, dtype=torch.float64), torch.tensor(levels)).numpy()
  arrays['x'] = x.transpose(0, 2, 3, 1)
  arrays['levels'] = levels.astype(np.int32)
  arrays['score'] = out.transpose(0, 2, 3, 1).astype(np.float32)
  return arrays


def _views():
  """Tensors whose storages are shared or strided, every supported dtype, plain values."""
  torch.manual_seed(1)
  base = torch.randn(4, 6)
  parameter = torch.nn.Parameter(torch.randn(2, 3))
  stateful = torch.nn.Parameter(torch.randn(3))
  stateful.note = 'Python state on a Parameter'  # pickled via _rebuild_parameter_with_state
  tensors = {
      'base': base,
      'transposed': base.t(),
      'row': base[1],
      'column': base[:, 2],
      'strided': base[1:3, ::2],
      'expanded': torch.arange(3.0).expand(4, 3),  # stride 0
      'parameter': parameter,
      'parameter_view': parameter.data[1],
      'stateful_parameter': stateful,
      'float64': torch.randn(2, 2, dtype=torch.float64),
      'float16': torch.randn(5).half(),
      'int64': torch.tensor([-(2 ** 40), 7]),
      'int32': torch.tensor([[1, -2], [3, 4]], dtype=torch.int32).t(),
      'int16': torch.tensor([-300, 300], dtype=torch.int16),
      'int8': torch.tensor([-5, 5], dtype=torch.int8),
      'uint8': torch.arange(10, dtype=torch.uint8)[::3],
      'bool': torch.tensor([True, False, True]),
      'complex64': torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
      'uint16': torch.tensor([1, 65535]).to(torch.uint16),  # _rebuild_tensor_v3; zip only
      'scalar': torch.tensor(3.5),
      'empty': torch.zeros(0, 3),
      'requires_grad': torch.randn(2, requires_grad=True),
  }
  plain = {'int': 3, 'float': 0.25, 'str': 'adam', 'none': None, 'bool': True,
           'list': [1, 2.5, 'x'], 'tuple': [0.9, 0.999], 'nested': {'1': [{'a': 1}]}}
  saved = dict(tensors)
  saved['plain'] = dict(plain, tuple=(0.9, 0.999), int_keys={0: 'a', 1: 'b'})
  torch.save(saved, os.path.join(HERE, 'views_zip.pth'))
  # torch cannot read back a uint16 tensor (an untyped storage) from its own
  # legacy format, and the PyTorch versions that wrote that format had no uint16.
  legacy = {k: v for k, v in saved.items() if k != 'uint16'}
  torch.save(legacy, os.path.join(HERE, 'views_legacy.pth'), _use_new_zipfile_serialization=False)
  arrays = {f'views/{k}': v.detach().numpy() for k, v in tensors.items()}
  arrays['views/plain_json'] = np.array(json.dumps(plain))
  return arrays


def main(reference_checkout, out_dir=None):
  global HERE  # pylint: disable=global-statement
  HERE = os.path.abspath(out_dir or HERE)
  os.makedirs(HERE, exist_ok=True)
  arrays = _official_checkpoint(reference_checkout)
  arrays.update(_views())
  out_path = os.path.join(HERE, 'checkpoint_outputs.npz')
  np.savez_compressed(out_path, **arrays)
  for name in ('checkpoint_legacy.pth', 'checkpoint_zip.pth', 'views_legacy.pth', 'views_zip.pth',
               'checkpoint_outputs.npz'):
    print(f'{name}: {os.path.getsize(os.path.join(HERE, name)) / 1e3:.0f} kB')


if __name__ == '__main__':
  main(*sys.argv[1:3])
