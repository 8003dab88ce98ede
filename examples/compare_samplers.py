"""Samplers side by side on real handwritten digits, then one class: a notebook in a script.

    python examples/compare_samplers.py                      # trains runs/digits first (~15 min)
    python examples/compare_samplers.py --workdir=runs/digits --num=200

Trains tf_configs/digits.cfg (a class-conditional U-Net on a VE SDE, 16x16
digits) unless --workdir already holds a run, loads it with `ncsn_tf.load`,
draws --num samples with each sampler (annealed Langevin, predictor-corrector,
the probability-flow ODE, Heun) from the same seed, and asks the package's
clean digit judge (ncsn_tf/metrics/digit_judge.py, fitted on the real
training digits only) what it sees: how confident it is that each sample is
a digit (its Inception-Score analogue, 10 at best) and their Fréchet distance
to the real test digits. Then it draws --num samples of --label and reports
the share the judge reads as that digit. One picture, <out>/samples.png,
has a row per sampler and the class row last. Each step is one call, as in a
notebook; docs/python.md explains them.
"""

import argparse
import os
import time

import numpy as np

import ncsn_tf
from ncsn_tf import plots
from ncsn_tf.data import digits
from ncsn_tf.metrics import digit_judge

#: Each sampler with settings that keep its cost near the others' on a CPU
#: (score evaluations per sample in the comment; --sampling_steps and friends
#: are the flags' names).
SAMPLERS = {
    'ald': dict(n_steps_each=2),                  # annealed Langevin: 100 levels x 2 = 200
    'pc': dict(sampling_steps=100),               # reverse diffusion + Langevin: 200
    'ode': dict(ode_rtol=1e-3, ode_atol=1e-3),    # adaptive probability flow: ~100
    'heun': dict(sampling_steps=35),              # EDM's second order: 69
}


def train_if_needed(workdir: str, train_steps: int, **flags) -> str:
  """`workdir` if it holds a run, else a new run of tf_configs/digits.cfg trained there."""
  if os.path.isfile(os.path.join(workdir, 'config.json')):
    return workdir
  config = ncsn_tf.Config.from_flagfile('tf_configs/digits.cfg', workdir=workdir,
                                        train_minutes=0, train_steps=train_steps, **flags)
  return ncsn_tf.train(config)


def judge(pipe, samples, labels=None) -> dict:
  """The clean judge's verdict: Inception-Score analogue, Fréchet distance, class share."""
  size = pipe.data_shape[0]
  classifier = digit_judge.fitted_classifier(size)
  test_images, _ = digits.load_digits_split('test', size)
  train_images, _ = digits.load_digits_split('train', size)
  return digit_judge.judge(classifier, samples, train_images=train_images / 255.0,
                           reference_images=test_images / 255.0, requested_labels=labels)


def main(workdir: str = 'runs/digits', num: int = 100, label: int = 7, seed: int = 0,
         train_steps: int = 4400, out: str | None = None, settings=None, **flags) -> dict:
  """Runs the comparison; returns {sampler: {'nfe', 'seconds', 'inception_score',
  'frechet_distance'}, 'class': {'label', 'share', ...}} and writes <out>/samples.png.

  settings: {sampler: its settings}, default SAMPLERS. flags: run.py flags for a
  run this trains (e.g. image_size=8 for a small one).
  """
  pipe = ncsn_tf.load(train_if_needed(workdir, train_steps, **flags))
  print(pipe)
  results, rows = {}, []
  for name, sampler_settings in (settings or SAMPLERS).items():
    start = time.perf_counter()
    samples = pipe.sample(num, sampler=name, seed=seed, **sampler_settings)
    seconds = time.perf_counter() - start
    verdict = judge(pipe, samples)
    results[name] = {'nfe': pipe.nfe, 'seconds': seconds,
                     'inception_score': verdict['inception_score'],
                     'frechet_distance': verdict['frechet_distance']}
    rows.append(samples)
    print(f'{name:5s} {pipe.nfe:4d} score evaluations, {seconds:6.1f} s: Inception-Score '
          f'analogue {verdict["inception_score"]:.2f}, Fréchet distance '
          f'{verdict["frechet_distance"]:.3g}')

  # One class: classifier-free guidance at the run's scale, with the run's own sampler.
  sevens = pipe.sample(num, label=label, seed=seed)
  verdict = judge(pipe, sevens, np.full([num], label))
  results['class'] = {'label': label, 'share': verdict['class_accuracy'],
                      'share_stderr': verdict['class_accuracy_stderr'], 'nfe': pipe.nfe}
  rows.append(sevens)
  print(f'label={label}: the judge reads {100 * verdict["class_accuracy"]:.0f}% ± '
        f'{100 * verdict["class_accuracy_stderr"]:.0f}% of {num} samples as {label}')

  out = out or os.path.join(workdir, 'compare_samplers')
  shown = min(num, 16)  # Columns: the first samples of each row.
  grid = plots.image_grid(np.concatenate([r[:shown] for r in rows]), nrow=shown)
  plots.save_png(grid, os.path.join(out, 'samples.png'))
  print(f'rows {", ".join(SAMPLERS if settings is None else settings)}, label={label}: '
        f'{os.path.join(out, "samples.png")}')
  return results


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='runs/digits')
  parser.add_argument('--num', type=int, default=100, help='samples per sampler and of the class')
  parser.add_argument('--label', type=int, default=7)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--train_steps', type=int, default=4400,
                      help='training steps when --workdir holds no run (4400: ~15 min, 2 cores)')
  args = parser.parse_args()
  main(args.workdir, args.num, args.label, args.seed, args.train_steps)
