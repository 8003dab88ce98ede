"""Writes refinenet_outputs.npz: the official PyTorch NCSN model's outputs, for a test.

Run in a Python that has torch and numpy, with a checkout of ermongroup/ncsn
(only its models/cond_refinenet_dilated.py is imported):

    <python with torch> tests/reference/make_refinenet_outputs.py /path/to/ncsn

For each case (a 32x32x3 and a 28x28x1 model, ngf 4, 4 levels) it draws every
parameter at random far from its initial value (γ, α, β ~ 1 ± 0.3; biases
± 0.1), rounds them to float32, evaluates the reference model in float64 on
random images in [0, 1] at several levels, and stores the state_dict, inputs
and outputs under '<case>/<name>'. tests/test_refinenet_reference.py loads the
weights into CondRefineNetDilated and compares.
"""

import sys
import types

import numpy as np
import torch

CASES = {'rgb32': dict(image_size=32, channels=3), 'gray28': dict(image_size=28, channels=1)}
NGF, LEVELS, BATCH = 4, 4, 4


def main(reference_checkout):
  sys.path.insert(0, reference_checkout)
  from models.cond_refinenet_dilated import CondRefineNetDilated  # pylint: disable=import-outside-toplevel
  arrays = {}
  for case, dims in CASES.items():
    config = types.SimpleNamespace(
        data=types.SimpleNamespace(logit_transform=False, **dims),
        model=types.SimpleNamespace(ngf=NGF, num_classes=LEVELS))
    torch.manual_seed(0)
    model = CondRefineNetDilated(config).double()
    with torch.no_grad():
      for name, param in model.named_parameters():
        if name.endswith('embed.weight'):
          param.copy_(1.0 + 0.3 * torch.randn_like(param))
        elif name.endswith('bias'):
          param.copy_(0.1 * torch.randn_like(param))
        param.copy_(param.float().double())  # the float32 values the fixture stores
    rng = np.random.default_rng(0)
    size, channels = dims['image_size'], dims['channels']
    x = rng.random((BATCH, channels, size, size)).astype(np.float32)
    levels = np.array([0, LEVELS - 1, 1, 2])
    with torch.no_grad():
      out = model(torch.tensor(x, dtype=torch.float64), torch.tensor(levels)).numpy()
    arrays[f'{case}/x'] = x.transpose(0, 2, 3, 1)
    arrays[f'{case}/levels'] = levels.astype(np.int32)
    arrays[f'{case}/score'] = out.transpose(0, 2, 3, 1).astype(np.float32)
    for name, param in model.state_dict().items():
      arrays[f'{case}/state/{name}'] = param.numpy().astype(np.float32)
  out_path = __file__.replace('make_refinenet_outputs.py', 'refinenet_outputs.npz')
  np.savez(out_path, **arrays)
  print(f'wrote {out_path}: {sum(a.nbytes for a in arrays.values()) / 1e3:.0f} kB uncompressed')


if __name__ == '__main__':
  main(sys.argv[1])
