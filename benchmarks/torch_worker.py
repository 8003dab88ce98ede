"""Times ONE configuration of the official PyTorch NCSN (run by bench.py, in the reference's venv).

    <reference python> benchmarks/torch_worker.py '<json spec>'

The spec names the checkout (`src`, a clone of ermongroup/ncsn); only its
models/cond_refinenet_dilated.py is imported (it needs torch alone). Settings
as in issue #5: 2 threads (or $NCSN_REFERENCE_THREADS), float32,
torch.set_flush_denormal(True). The steps mirror the reference's own code:

  train    losses/dsm.py anneal_dsm_score_estimation (λ(σ) = σ²), loss.backward(),
           Adam (runners/anneal_runner.py)
  langevin runners/anneal_runner.py anneal_Langevin_dynamics: one score
           evaluation under no_grad plus x + ε s + sqrt(2ε) z (without the
           reference's per-step copy of every image to a Python list)

Prints one line `RESULT {json}`.
"""

import json
import os
import resource
import sys
import time
import types

import numpy as np
import torch

MODELS = {
    'cifar10': dict(ngf=128, image_size=32, channels=3),
    'mnist': dict(ngf=64, image_size=28, channels=1),
}


def main():
  spec = json.loads(sys.argv[1])
  case = spec['case']
  sys.path.insert(0, spec['src'])
  from models.cond_refinenet_dilated import CondRefineNetDilated  # the reference's model
  torch.set_num_threads(int(os.environ.get('NCSN_REFERENCE_THREADS', '2')))
  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  m = MODELS[case['model']]
  config = types.SimpleNamespace(
      data=types.SimpleNamespace(logit_transform=False, image_size=m['image_size'],
                                 channels=m['channels']),
      model=types.SimpleNamespace(ngf=m['ngf'], num_classes=10))
  score = CondRefineNetDilated(config)
  batch = case['batch']
  x = torch.rand(batch, m['channels'], m['image_size'], m['image_size'])
  sigmas = torch.tensor(np.exp(np.linspace(np.log(1.0), np.log(0.01), 10)), dtype=torch.float32)
  steps = spec['steps_per_call']

  if case['mode'] == 'train':
    optimizer = torch.optim.Adam(score.parameters(), lr=1e-3, betas=(0.9, 0.999))

    def call():
      for _ in range(steps):
        labels = torch.randint(0, len(sigmas), (batch,))
        used = sigmas[labels].view(batch, 1, 1, 1)
        perturbed = x + torch.randn_like(x) * used
        target = -(perturbed - x) / used**2
        out = score(perturbed, labels)
        loss = (0.5 * ((out - target)**2).view(batch, -1).sum(-1) * used.view(-1)**2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
      loss.item()
  else:
    state = {'x': x}
    labels = torch.zeros(batch, dtype=torch.long)
    step_size = 2e-5

    def call():
      with torch.no_grad():
        x_mod = state['x']
        for _ in range(steps):
          noise = torch.randn_like(x_mod) * np.sqrt(step_size * 2)
          grad = score(x_mod, labels)
          x_mod = x_mod + step_size * grad + noise
        state['x'] = x_mod

  for _ in range(spec['warmup']):
    call()
  times = []
  for _ in range(spec['reps']):
    start = time.perf_counter()
    call()
    times.append((time.perf_counter() - start) / steps)
  print('RESULT ' + json.dumps({
      'times': times, 'params': sum(p.numel() for p in score.parameters()),
      'torch_version': torch.__version__, 'threads': torch.get_num_threads(),
      'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


if __name__ == '__main__':
  main()
