"""Soak test: long training runs must keep memory flat and step time steady.

    python benchmarks/soak.py                       # toy 20k steps, then shapes 2k steps
    python benchmarks/soak.py --only toy --steps 20000

Trains each config in a child process (exactly `run.py --mode=train`'s
training loop, without the sampling/eval/export that follows), samples the
child's resident memory (VmRSS) every --interval seconds, reads the
steps_per_sec scalars back from TensorBoard, and prints (and writes as JSON
to --out) RSS and step time at the start, middle and end of the run, plus the
RSS growth over the second half. Memory is judged on the second half: the
first snapshot, tracing and the shuffle buffer fill up early.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {'toy': ('tf_configs/toy_gmm.cfg', 20000, 100),
           'shapes': ('tf_configs/shapes.cfg', 2000, 50)}

CHILD = """
import sys
from ncsn_tf.config import flags as ncsn_flags
from ncsn_tf.training import loop as train_loop
argv = sys.argv
ncsn_flags.FLAGS(argv)
train_loop.train(ncsn_flags.build_config(argv))
"""


def rss_mib(pid: int) -> float | None:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) / 1024.0
  except FileNotFoundError:
    return None
  return None


def read_steps_per_sec(logdir: str) -> list[tuple[int, float]]:
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors('steps_per_sec')]


def soak(name: str, steps: int, interval: float) -> dict:
  flagfile, _, log_freq = CONFIGS[name]
  work = tempfile.mkdtemp(prefix=f'soak_{name}_')
  argv = ['soak', f'--flagfile={os.path.join(ROOT, flagfile)}', f'--workdir={work}/run',
          f'--export_dir={work}/export', f'--train_steps={steps}', f'--log_freq={log_freq}',
          f'--snapshot_freq={max(steps // 4, 1)}']
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  start = time.time()
  proc = subprocess.Popen([sys.executable, '-c', CHILD, *argv[1:]], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  samples = []
  try:
    while proc.poll() is None:
      value = rss_mib(proc.pid)
      if value is not None:
        samples.append((time.time() - start, value))
      time.sleep(interval)
    err = proc.stderr.read()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  if proc.returncode != 0:
    raise SystemExit(f'{name}: training failed:\n{err[-3000:]}')
  speed = read_steps_per_sec(os.path.join(work, 'run', 'tensorboard'))
  ms = np.array([1000.0 / v for _, v in speed])
  rss = np.array([v for _, v in samples])
  thirds = np.array_split(np.arange(len(ms)), 3)
  half = len(rss) // 2
  result = {
      'config': name, 'steps': steps, 'wall_s': round(time.time() - start, 1),
      'rss_mib': {'start_10pct': round(float(rss[len(rss) // 10]), 1),
                  'middle': round(float(rss[half]), 1), 'end': round(float(rss[-1]), 1),
                  'max': round(float(rss.max()), 1),
                  'growth_second_half': round(float(rss[-1] - rss[half]), 1)},
      'step_ms': {'first_third_median': round(float(np.median(ms[thirds[0]])), 3),
                  'middle_third_median': round(float(np.median(ms[thirds[1]])), 3),
                  'last_third_median': round(float(np.median(ms[thirds[2]])), 3),
                  'p90_over_median': round(float(np.percentile(ms, 90) / np.median(ms)), 2)},
      'rss_samples': len(rss), 'speed_samples': len(ms),
  }
  print(json.dumps(result), flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--only', choices=sorted(CONFIGS), action='append')
  parser.add_argument('--steps', type=int, help='override the step count of every config')
  parser.add_argument('--interval', type=float, default=2.0, help='seconds between RSS samples')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results', 'soak.json'))
  args = parser.parse_args()
  results = [soak(name, args.steps or CONFIGS[name][1], args.interval)
             for name in (args.only or list(CONFIGS))]
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + '.tmp', 'w') as f:
    json.dump(results, f, indent=2)
  os.replace(args.out + '.tmp', args.out)


if __name__ == '__main__':
  main()
