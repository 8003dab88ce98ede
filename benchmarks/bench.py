"""Speed and memory of ncsn_tf beside the official PyTorch NCSN, in one run.

    python benchmarks/bench.py            # full: every configuration, 10 timed reps
    python benchmarks/bench.py --quick    # a few configurations, 3 timed reps

Each (configuration, implementation) runs in a FRESH subprocess, so its peak
RSS (ru_maxrss) is its own; implementations of one configuration run back to
back, so the ratio ours/reference compares like with like even on a shared
machine. Writes benchmarks/results/bench.json and bench.md (the table).

What one step is (the same for both implementations):
  train    annealed DSM loss on a batch, backward, Adam update
           (ours: `training/step.py make_train_chunk`, the loop `run.py` trains with)
  langevin one score evaluation plus the update x + ε s + sqrt(2ε) z
           (ours: `sampling.langevin.annealed_langevin_dynamics`, the graph loop)

The reference is timed by benchmarks/torch_worker.py with the interpreter and
checkout named by --reference_python / --reference_src (or the environment
variables NCSN_REFERENCE_PYTHON / NCSN_REFERENCE_SRC); without them the table
says "reference not available". See benchmarks/README.md.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The paper's image models (the reference's configs): ngf, image size, channels.
MODELS = {
    'cifar10': dict(ngf=128, image_size=32, channels=3),
    'mnist': dict(ngf=64, image_size=28, channels=1),
}
NUM_SCALES = 10  # L of the paper's image models.
# The reference's published numbers (issue #5), seconds per step, for the table.
PUBLISHED_REFERENCE = {
    ('cifar10', 'train', 8): 2.09, ('cifar10', 'train', 16): 4.17, ('cifar10', 'train', 32): 7.98,
    ('cifar10', 'langevin', 8): 0.78, ('cifar10', 'langevin', 64): 7.03,
    ('mnist', 'train', 8): 0.54, ('mnist', 'train', 32): 1.93,
    ('mnist', 'langevin', 8): 0.19, ('mnist', 'langevin', 64): 1.46,
}
FULL_CASES = [('cifar10', 'train', 8), ('cifar10', 'train', 16), ('cifar10', 'train', 32),
              ('cifar10', 'langevin', 8), ('cifar10', 'langevin', 32), ('cifar10', 'langevin', 64),
              ('mnist', 'train', 8), ('mnist', 'train', 32),
              ('mnist', 'langevin', 8), ('mnist', 'langevin', 32), ('mnist', 'langevin', 64)]
QUICK_CASES = [('cifar10', 'train', 8), ('cifar10', 'langevin', 8),
               ('mnist', 'train', 32), ('mnist', 'langevin', 64)]
# Extra XLA variants (--jit_compile) measured in the full run.
JIT_CASES = [('cifar10', 'train', 8), ('cifar10', 'langevin', 8)]
# The default precision on this kind of machine (ncsn_tf.runtime.precision.resolve('auto', 'refinenet')).
DEFAULT_MARK = '*'


@dataclasses.dataclass(frozen=True)
class Case:
  model: str
  mode: str
  batch: int
  impl: str                 # 'ours' or 'reference'
  precision: str = 'float32'
  jit_compile: bool = False

  @property
  def variant(self) -> str:
    if self.impl == 'reference':
      return 'reference (torch, float32)'
    return self.precision + (' +xla' if self.jit_compile else '')


# --- the workers (one configuration in a fresh process) -------------------------

def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _time_calls(fn, warmup: int, reps: int, steps_per_call: int):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) / steps_per_call)
  return times


def forward_flops(model, image_size: int, channels: int) -> float:
  """FLOPs of one forward pass on one image (TF's op-level count: convs, matmuls, elementwise)."""
  import tensorflow as tf
  from tensorflow.python.framework import convert_to_constants
  fn = tf.function(lambda x, i: model(x, i)).get_concrete_function(
      tf.TensorSpec([1, image_size, image_size, channels], tf.float32),
      tf.TensorSpec([1], tf.int32))
  graph = convert_to_constants.convert_variables_to_constants_v2(fn).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def run_ours(case: Case, warmup: int, reps: int, steps_per_call: int) -> dict:
  import tensorflow as tf

  from ncsn_tf import config as config_lib
  from ncsn_tf.models import registry as networks
  from ncsn_tf.runtime import checkpoints
  from ncsn_tf.runtime import precision
  from ncsn_tf.sampling import langevin
  from ncsn_tf.training import step as train_step

  spec = MODELS[case.model]
  config = config_lib.Config(workdir='/tmp/ncsn_bench').replace(
      data={'dataset': case.model, 'image_size': spec['image_size'], 'random_flip': False},
      model={'name': 'refinenet', 'ngf': spec['ngf'], 'num_scales': NUM_SCALES,
             'sigma_begin': 1.0, 'sigma_end': 0.01},
      train={'batch_size': case.batch, 'precision': case.precision,
             'jit_compile': case.jit_compile, 'ema_rate': 0.0})
  shape = (spec['image_size'], spec['image_size'], spec['channels'])
  x = tf.random.stateless_uniform((case.batch,) + shape, seed=[0, 1])
  if case.mode == 'train':
    strategy = tf.distribute.get_strategy()
    state = checkpoints.create_state(config, strategy)
    iterator = iter(tf.data.Dataset.from_tensors(x).repeat())
    chunk = train_step.make_train_chunk(config, strategy, state)
    num_steps = tf.constant(steps_per_call)

    def step():
      stats = chunk(iterator, num_steps)
      stats['loss_sum'].numpy()  # wait for the result
    model = state.model
  else:
    policy = precision.resolve(case.precision, 'refinenet')
    with precision.policy_scope(policy):
      model = networks.build_model(config, shape)
    sigmas = checkpoints.ladder(config)[:1]  # one level: each call runs `steps_per_call` steps

    def score_fn(xx, ii):
      return model(xx, ii)

    def step():
      langevin.annealed_langevin_dynamics(score_fn, x, sigmas, n_steps_each=steps_per_call,
                                          step_lr=2e-5, seed=[0, 0]).numpy()
  times = _time_calls(step, warmup, reps, steps_per_call)
  peak_rss = _peak_rss_gib()  # before the FLOP count builds another graph
  flops = forward_flops(model, spec['image_size'], spec['channels'])
  return dict(times=times, params=int(model.count_params()), forward_flops=flops,
              intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
              inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
              tf_version=tf.__version__, peak_rss_gib=peak_rss)


def run_worker(spec_json: str):
  spec = json.loads(spec_json)
  case = Case(**spec['case'])
  result = run_ours(case, spec['warmup'], spec['reps'], spec['steps_per_call'])
  print('RESULT ' + json.dumps(result), flush=True)


# --- the driver --------------------------------------------------------------------

def _subprocess(cmd, env, timeout):
  start = time.time()
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout} s'}
  for line in proc.stdout.splitlines():
    if line.startswith('RESULT '):
      result = json.loads(line[len('RESULT '):])
      result['wall_s'] = round(time.time() - start, 1)
      return result
  return {'error': (proc.stderr or proc.stdout)[-2000:]}


def measure(case: Case, args) -> dict:
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  spec = {'case': dataclasses.asdict(case), 'warmup': args.warmup, 'reps': args.reps,
          'steps_per_call': args.steps_per_call}
  if case.impl == 'ours':
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', json.dumps(spec)]
  else:
    spec['src'] = args.reference_src
    cmd = [args.reference_python, os.path.join(HERE, 'torch_worker.py'), json.dumps(spec)]
  load_before = os.getloadavg()[0]
  result = _subprocess(cmd, env, args.timeout)
  result['load_avg_1min_before'] = round(load_before, 2)
  if 'times' in result:
    times = sorted(result['times'])
    result['median_s'] = times[len(times) // 2] if len(times) % 2 else 0.5 * (
        times[len(times) // 2 - 1] + times[len(times) // 2])
  return result


def reference_available(args) -> str | None:
  """None if the reference can run, else why not."""
  if not args.reference_python or not args.reference_src:
    return 'set NCSN_REFERENCE_PYTHON and NCSN_REFERENCE_SRC (see benchmarks/README.md)'
  if not os.access(args.reference_python, os.X_OK):
    return f'{args.reference_python} is not an executable'
  model_file = os.path.join(args.reference_src, 'models', 'cond_refinenet_dilated.py')
  if not os.path.exists(model_file):
    return f'{model_file} does not exist'
  return None


def machine_info() -> dict:
  info = {'platform': platform.platform(), 'python': platform.python_version(),
          'cpus': os.cpu_count()}
  try:
    with open('/proc/cpuinfo') as f:
      text = f.read()
    info['cpu'] = next((l.split(':', 1)[1].strip() for l in text.splitlines()
                        if l.startswith('model name')), '?')
    flags = next((l.split(':', 1)[1].split() for l in text.splitlines() if l.startswith('flags')), [])
    info['isa'] = sorted(f for f in flags if f.startswith(('avx512_bf16', 'amx', 'avx512f',
                                                           'avx512_vnni', 'avx512_fp16')))
    with open('/proc/meminfo') as f:
      info['mem_gib'] = round(int(f.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  return info


def _fmt_s(r):
  return f"{r['median_s']:.3f}" if r and 'median_s' in r else '-'


def _fmt_ratio(ours, ref):
  if ours and ref and 'median_s' in ours and 'median_s' in ref:
    return f"{ours['median_s'] / ref['median_s']:.2f}"
  return '-'


def _config_key(case: dict) -> tuple:
  return case['model'], case['mode'], case['batch']


def rows_from_records(records, default_precision):
  """Groups records by configuration, in FULL_CASES order, for `make_table`."""
  order = {key: k for k, key in enumerate(FULL_CASES)}
  grouped = {}
  for record in records:
    case = Case(**record['case'])
    name = case.variant + (f' {DEFAULT_MARK}' if case.impl == 'ours' and not case.jit_compile
                           and case.precision == default_precision else '')
    grouped.setdefault(_config_key(record['case']), {})[name] = record
  keys = sorted(grouped, key=lambda key: (order.get(key, len(order)), key))
  return [(*key, grouped[key]) for key in keys]


def make_table(rows, flops_per_image, ref_note) -> str:
  """rows: list of (model, mode, batch, {variant: result})."""
  lines = [
      '| model | step | batch | implementation | median s/step | ours/ref (same run) | '
      'ours/ref (published) | GFLOP/s | peak RSS GiB | RSS ours/ref |',
      '|---|---|---:|---|---:|---:|---:|---:|---:|---:|']
  for model, mode, batch, results in rows:
    ref = results.get('reference (torch, float32)')
    published = PUBLISHED_REFERENCE.get((model, mode, batch))
    for variant, r in results.items():
      is_ref = variant.startswith('reference')
      flops = flops_per_image.get(model)
      gflops = '-'
      if flops and r and 'median_s' in r:
        factor = 3.0 if mode == 'train' else 1.0  # backward ~ 2x forward
        gflops = f"{factor * flops * batch / r['median_s'] / 1e9:.0f}"
      rss = f"{r['peak_rss_gib']:.2f}" if r and 'peak_rss_gib' in r else '-'
      if r and 'error' in r:
        rss = 'error'
      rss_ratio = '-' if is_ref or not (ref and 'peak_rss_gib' in ref and 'peak_rss_gib' in r) \
          else f"{r['peak_rss_gib'] / ref['peak_rss_gib']:.2f}"
      pub = '-' if is_ref or not published or 'median_s' not in r else \
          f"{r['median_s'] / published:.2f}"
      lines.append(f'| {model} | {mode} | {batch} | {variant} | {_fmt_s(r)} | '
                   f'{"-" if is_ref else _fmt_ratio(r, ref)} | {pub} | {gflops} | {rss} | '
                   f'{rss_ratio} |')
    if ref is None:
      lines.append(f'| {model} | {mode} | {batch} | reference | {ref_note} | | | | | |')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='4 configurations, 3 timed reps')
  parser.add_argument('--reps', type=int, default=None, help='timed repetitions (default 10)')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--steps_per_call', type=int, default=1,
                      help='steps run inside the graph per timed call')
  parser.add_argument('--precisions', default='float32,mixed_bfloat16')
  parser.add_argument('--no_jit', action='store_true', help='skip the XLA (--jit_compile) rows')
  parser.add_argument('--only', default='', help='comma list of model:mode:batch to run')
  parser.add_argument('--no_reference', action='store_true')
  parser.add_argument('--reference_python', default=os.environ.get('NCSN_REFERENCE_PYTHON', ''))
  parser.add_argument('--reference_src', default=os.environ.get('NCSN_REFERENCE_SRC', ''))
  parser.add_argument('--out_dir', default=os.path.join(HERE, 'results'))
  parser.add_argument('--timeout', type=int, default=1800, help='seconds per subprocess')
  parser.add_argument('--update', action='store_true',
                      help='re-measure only these configurations and merge them into the '
                           'bench.json already in --out_dir (every other row is kept)')
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    return run_worker(args.worker)
  if args.reps is None:
    args.reps = 3 if args.quick else 10
  cases = QUICK_CASES if args.quick else FULL_CASES
  if args.only:
    cases = [(m, mode, int(b)) for m, mode, b in (c.split(':') for c in args.only.split(','))]
  jit_cases = [] if (args.quick or args.no_jit) else JIT_CASES
  ref_note = 'not run (--no_reference)' if args.no_reference else reference_available(args)
  if ref_note:
    print(f'reference not available: {ref_note}', flush=True)
  sys.path.insert(0, ROOT)
  from ncsn_tf.runtime import precision
  default_precision = precision.resolve('auto', 'refinenet')
  precisions = args.precisions.split(',')

  started = datetime.datetime.now().isoformat(timespec='seconds')
  records, flops_per_image = [], {}
  for model, mode, batch in cases:
    variants = []
    if not ref_note:
      variants.append(Case(model, mode, batch, 'reference'))
    variants += [Case(model, mode, batch, 'ours', p) for p in precisions]
    if (model, mode, batch) in jit_cases:
      variants += [Case(model, mode, batch, 'ours', p, jit_compile=True) for p in precisions]
    for case in variants:
      result = measure(case, args)
      result['measured_at'] = datetime.datetime.now().isoformat(timespec='seconds')
      records.append({'case': dataclasses.asdict(case), **result})
      if 'forward_flops' in result:
        flops_per_image[model] = result['forward_flops']
      status = result.get('error', '').splitlines()[-1:] if 'error' in result else ''
      print(f'{model:8s} {mode:8s} b={batch:<3d} {case.variant:28s} '
            f'{_fmt_s(result):>8s} s/step  rss {result.get("peak_rss_gib", 0):.2f} GiB  '
            f'load {result["load_avg_1min_before"]} {status}', flush=True)

  if args.update:
    # Keep the earlier run's records of every configuration not measured now.
    with open(os.path.join(args.out_dir, 'bench.json')) as f:
      earlier = json.load(f)
    measured = {_config_key(r['case']) for r in records}
    records = [r for r in earlier['records'] if _config_key(r['case']) not in measured] + records
    flops_per_image = {**earlier.get('forward_flops_per_image', {}), **flops_per_image}
    redone = ', '.join(':'.join(map(str, key)) for key in sorted(measured))
    started = f'{earlier["started"]} (configurations {redone} re-measured {started})'
  table = make_table(rows_from_records(records, default_precision), flops_per_image, ref_note or '')
  info = machine_info()
  header = (f'Measured {started} on {info.get("cpu", "?")} ({info.get("cpus")} CPUs, '
            f'{info.get("mem_gib", "?")} GiB, ISA {" ".join(info.get("isa", []))}); '
            f'median of {args.reps} steps after {args.warmup} warm-up calls, '
            f'each configuration in a fresh process. `{DEFAULT_MARK}` = the default '
            f'precision here (`--precision=auto` -> {default_precision}). GFLOP/s counts the '
            f'forward pass ({", ".join(f"{k}: {v / 1e9:.2f} GFLOP/image" for k, v in flops_per_image.items())}) '
            f'and 2x that for the backward pass. "published" = the reference numbers in issue #5.')
  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, 'bench.json'), 'w') as f:
    json.dump({'started': started, 'machine': info, 'args': vars(args),
               'default_precision': default_precision, 'reference': ref_note or 'available',
               'forward_flops_per_image': flops_per_image, 'records': records}, f, indent=1)
  with open(os.path.join(args.out_dir, 'bench.md'), 'w') as f:
    f.write(header + '\n\n' + table + '\n')
  print('\n' + header + '\n\n' + table)
  print(f'\nwrote {args.out_dir}/bench.json and bench.md')


if __name__ == '__main__':
  main()
