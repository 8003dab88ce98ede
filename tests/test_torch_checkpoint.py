"""Reading torch.save checkpoints without torch, against what torch itself saved.

tests/reference/ holds (made by tests/reference/make_checkpoint_fixture.py with
the official ermongroup/ncsn code) an official-style checkpoint,
`[DataParallel(CondRefineNetDilated).state_dict(), Adam.state_dict()]` for
32x32x3 images (ngf 4, 4 levels, two Adam steps), in torch.save's legacy format
(as the 2019 checkpoints) and in its zip format; small files of shared-storage,
strided and every-dtype tensors in both formats; and an npz with torch's own
arrays for all of it, random images and the reference model's scores on them.
"""

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import ncsn_tf
from ncsn_tf.cli import import_checkpoint
from ncsn_tf.models.reference_weights import assign_reference_weights
from ncsn_tf.models.refinenet import CondRefineNetDilated
from ncsn_tf.models.torch_checkpoint import DATA_PARALLEL_PREFIX, load_state_dicts, score_state_dict

REFERENCE = os.path.join(os.path.dirname(__file__), 'reference')
FORMATS = ['legacy', 'zip']
# As tests/test_refinenet_reference.py: our float32 forward pass against the
# reference's float64 one, relative to the largest output.
RELATIVE_TOLERANCE = 2e-5


def _path(name):
  return os.path.join(REFERENCE, name)


@pytest.fixture(scope='module')
def expected():
  with np.load(_path('checkpoint_outputs.npz')) as arrays:
    data = {k: arrays[k] for k in arrays.files}
  data['json'] = json.loads(str(data.pop('torch/json')))
  return data


def _assert_identical(got, want):
  assert got.dtype == want.dtype and got.shape == want.shape
  np.testing.assert_array_equal(got, want, strict=True)


def _flat(arrays):
  return np.concatenate([a.ravel() for a in arrays])


@pytest.mark.parametrize('fmt', FORMATS)
def test_official_checkpoint_reads_as_torch_saved_it(fmt, expected):
  score_state, optimizer_state = load_state_dicts(_path(f'checkpoint_{fmt}.pth'))
  meta = expected['json']
  assert list(score_state) == meta['state_names']
  assert all(name.startswith(DATA_PARALLEL_PREFIX) for name in score_state)
  assert [list(a.shape) for a in score_state.values()] == meta['state_shapes']
  _assert_identical(_flat(score_state.values()), expected['torch/state_flat'])

  # The optimizer state: plain Python values around the moment tensors.
  assert json.loads(json.dumps(optimizer_state['param_groups'])) == meta['param_groups']
  group, = optimizer_state['param_groups']
  assert group['betas'] == (0.9, 0.999) and group['params'] == list(range(len(score_state)))
  state = optimizer_state['state']
  assert sorted(state) == group['params']
  assert {str(i): s['step'] for i, s in state.items()} == meta['optimizer_steps']
  moments = [state[i] for i in sorted(state)]
  for key in ('exp_avg', 'exp_avg_sq'):
    assert [m[key].shape for m in moments] == [a.shape for a in score_state.values()]
    _assert_identical(_flat(m[key] for m in moments), expected[f'torch/{key}_flat'])


def test_both_formats_give_the_same_score_state_dict():
  legacy = score_state_dict(_path('checkpoint_legacy.pth'))
  zipped = score_state_dict(_path('checkpoint_zip.pth'))
  assert list(legacy) == list(zipped)
  for name in legacy:
    _assert_identical(legacy[name], zipped[name])


def test_score_state_dict_keeps_or_strips_the_data_parallel_prefix():
  kept = score_state_dict(_path('checkpoint_legacy.pth'))
  stripped = score_state_dict(_path('checkpoint_legacy.pth'), strip_data_parallel_prefix=True)
  assert type(kept) is dict and list(kept)[0] == 'module.begin_conv.weight'
  assert list(stripped) == [k[len(DATA_PARALLEL_PREFIX):] for k in kept]
  for name, value in kept.items():
    _assert_identical(stripped[name[len(DATA_PARALLEL_PREFIX):]], value)


@pytest.mark.parametrize('fmt', FORMATS)
def test_strided_shared_and_typed_tensors(fmt, expected):
  views = load_state_dicts(_path(f'views_{fmt}.pth'))
  names = [k[len('views/'):] for k in expected
           if k.startswith('views/') and k != 'views/plain_json']
  for name in names:
    want = expected[f'views/{name}']
    if name == 'uint16' and fmt == 'legacy':  # torch's legacy format cannot hold it
      assert name not in views
      continue
    _assert_identical(views[name], want)
  # Tensors that viewed one storage share memory, as in torch.
  for name in ('transposed', 'row', 'column', 'strided'):
    assert np.shares_memory(views[name], views['base'])
  assert np.shares_memory(views['parameter_view'], views['parameter'])
  assert views['transposed'].strides == (4, 24) and views['expanded'].strides == (0, 4)
  assert not np.shares_memory(views['base'], views['float64'])

  plain = views['plain']
  assert plain['tuple'] == (0.9, 0.999) and plain['int_keys'] == {0: 'a', 1: 'b'}
  plain = dict(plain, tuple=list(plain['tuple']))
  del plain['int_keys']
  assert plain == json.loads(str(expected['views/plain_json']))


def test_state_dict_reproduces_the_reference_scores(expected):
  state = score_state_dict(_path('checkpoint_legacy.pth'))
  x, levels, want = expected['x'], expected['levels'], expected['score']
  ngf = state['module.begin_conv.bias'].shape[0]
  num_classes = state['module.normalizer.embed.weight'].shape[0]
  model = CondRefineNetDilated(ngf, num_classes, x.shape[1], x.shape[3]).build_for()
  assign_reference_weights(model, state)
  got = np.asarray(model(x, levels))
  scale = np.abs(want).max()
  assert scale > 0.5  # the fixture's weights give outputs of order 1, not ~0
  np.testing.assert_allclose(got, want, rtol=0, atol=RELATIVE_TOLERANCE * scale)


# --- hand-made legacy files: what today's torch no longer writes -------------------

def _opcodes(value):
  """One value's pickle opcodes (protocol 2), without the PROTO header and STOP."""
  return pickle.dumps(value, protocol=2)[2:-1]


def _legacy_file(path, tensors, storages, main_pickle=None):
  """Writes a legacy torch.save file of {name: float32 tensor}, byte by byte.

  tensors: name -> (storage key, storage numel, offset, size, stride, view_metadata);
  storages: key -> its float32 values, written after the pickles;
  main_pickle: the object's pickle as opcodes, in place of a dict of `tensors`.
  """
  body = b''
  for name, (key, numel, offset, size, stride, view) in tensors.items():
    storage_id = (b'(' + _opcodes('storage') + b'ctorch\nFloatStorage\n' + _opcodes(key)
                  + _opcodes('cpu') + _opcodes(numel) + _opcodes(view) + b't' + b'Q')  # BINPERSID
    body += _opcodes(name) + (
        b'ctorch._utils\n_rebuild_tensor_v2\n(' + storage_id + _opcodes(offset)
        + _opcodes(tuple(size)) + _opcodes(tuple(stride)) + _opcodes(False)
        + b'ccollections\nOrderedDict\n)R' + b'tR')
  with open(path, 'wb') as out:
    out.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2))
    out.write(pickle.dumps({'protocol_version': 1001, 'little_endian': True,
                            'type_sizes': {'short': 2, 'int': 4, 'long': 8}}, protocol=2))
    out.write(b'\x80\x02' + (main_pickle or b'}(' + body + b'u') + b'.')
    out.write(pickle.dumps(sorted(storages), protocol=2))
    for key in sorted(storages):
      values = np.asarray(storages[key], '<f4')
      out.write(struct.pack('<q', values.size) + values.tobytes())


def test_hand_made_legacy_file_and_storage_views(tmp_path):
  # Storage views (a storage that slices another) were written by PyTorch < 0.4.
  path = tmp_path / 'old.pth'
  root = np.arange(10, dtype=np.float32)
  _legacy_file(path, {
      'whole': ('r', 10, 0, (2, 5), (5, 1), None),
      'in_view': ('r', 10, 1, (3,), (1,), ('v', 2, 6)),  # elements 2..7 of r, then from 1
  }, {'r': root})
  got = load_state_dicts(path)
  _assert_identical(got['whole'], root.reshape(2, 5))
  _assert_identical(got['in_view'], root[3:6])
  assert np.shares_memory(got['whole'], got['in_view'])


@pytest.mark.parametrize('geometry, match', [
    ((0, (3,), (4,)), 'reaches element 8 of a storage of 6'),
    ((5, (2,), (1,)), 'reaches element 6 of a storage of 6'),
    ((0, (2,), (-1,)), 'negative'),
])
def test_a_tensor_outside_its_storage_is_refused(tmp_path, geometry, match):
  path = tmp_path / 'bad.pth'
  _legacy_file(path, {'t': ('s', 6, *geometry, None)}, {'s': np.zeros(6)})
  _one_line_error(ValueError, path, match)


def test_storage_count_mismatch_is_refused(tmp_path):
  path = tmp_path / 'bad.pth'
  _legacy_file(path, {'t': ('s', 4, 0, (4,), (1,), None)}, {'s': np.zeros(5)})
  _one_line_error(ValueError, path, 'storage s has 5 elements on disk, 4 in the pickle')


def test_a_file_cannot_change_how_later_files_are_read(tmp_path):
  # Pickle's BUILD opcode sets attributes on the object before it; here it tries
  # to give the shared float32 storage class another element type, and our
  # tensor function other defaults.
  for target in (b'ctorch\nFloatStorage\n', b'ctorch._utils\n_rebuild_tensor_v2\n'):
    path = tmp_path / 'mutating.pth'
    state = (None, {'dtype': '<f8', '__defaults__': (1,)})
    _legacy_file(path, {}, {}, main_pickle=target + _opcodes(state) + b'b')  # BUILD
    _one_line_error(ValueError, path, 'corrupt pickle')
  again = load_state_dicts(_path('views_legacy.pth'))
  _assert_identical(again['base'], load_state_dicts(_path('views_zip.pth'))['base'])
  assert again['base'].dtype == np.float32


# --- what GPU-trained checkpoints change -------------------------------------------

def test_gpu_location_is_ignored(tmp_path):
  # A GPU-trained checkpoint names the same storage class with location 'cuda:0'.
  raw = open(_path('views_legacy.pth'), 'rb').read()
  cpu, cuda = b'X\x03\x00\x00\x00cpu', b'X\x06\x00\x00\x00cuda:0'  # pickle BINUNICODE
  assert cpu in raw
  path = tmp_path / 'gpu.pth'
  path.write_bytes(raw.replace(cpu, cuda))
  got, want = load_state_dicts(path), load_state_dicts(_path('views_legacy.pth'))
  _assert_identical(got['transposed'], want['transposed'])


# --- errors: one line, naming the file ----------------------------------------------

def _one_line_error(exception, path, match):
  with pytest.raises(exception, match=match) as caught:
    load_state_dicts(path)
  message = str(caught.value)
  assert '\n' not in message and str(path) in message
  return message


def test_missing_file(tmp_path):
  _one_line_error(FileNotFoundError, tmp_path / 'nope.pth', 'no such checkpoint file')


@pytest.mark.parametrize('content', [b'', b'hello world\n' * 10, np.arange(100.0).tobytes(),
                                     b'\x80\x02K\x07.'])  # the last: a pickle of 7
def test_not_a_checkpoint(tmp_path, content):
  path = tmp_path / 'other.pth'
  path.write_bytes(content)
  _one_line_error(ValueError, path, 'not a PyTorch checkpoint')


def test_a_zip_that_is_not_a_checkpoint(tmp_path):
  path = tmp_path / 'other.zip'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('readme.txt', 'hello')
  _one_line_error(ValueError, path, 'not a torch.save file')


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('fraction', [0.02, 0.5, 0.999])
def test_truncated(tmp_path, fmt, fraction):
  raw = open(_path(f'checkpoint_{fmt}.pth'), 'rb').read()
  path = tmp_path / 'cut.pth'
  path.write_bytes(raw[:int(len(raw) * fraction)])
  _one_line_error(ValueError, path, 'truncated')


@pytest.mark.parametrize('fmt', FORMATS)
def test_unsupported_dtype(tmp_path, fmt):
  # bfloat16 has no numpy dtype. Its storage class has float16's element size,
  # so renaming the class in the pickle makes a valid bfloat16 checkpoint.
  raw_path = _path(f'views_{fmt}.pth')
  path = tmp_path / 'bf16.pth'
  _rewrite_pickle(raw_path, path, lambda p: p.replace(b'torch\nHalfStorage\n',
                                                      b'torch\nBFloat16Storage\n'))
  message = _one_line_error(ValueError, path, 'BFloat16Storage')
  assert 'float32' in message  # lists what is supported


@pytest.mark.parametrize('global_name', [b'os\nsystem\n', b'torch.nn.modules.conv\nConv2d\n'])
def test_globals_outside_the_allow_list_are_refused(tmp_path, global_name):
  path = tmp_path / 'evil.pth'
  _rewrite_pickle(_path('views_legacy.pth'), path,
                  lambda p: p.replace(b'collections\nOrderedDict\n', global_name))
  name = global_name.decode().strip().replace('\n', '.')
  _one_line_error(ValueError, path, f'refusing to load global {name}')


def test_a_file_without_a_state_dict(tmp_path):
  # views_*.pth is a dict of tensors and a nested dict: not name -> array only.
  for fmt in FORMATS:
    path = _path(f'views_{fmt}.pth')
    with pytest.raises(ValueError, match='holds no state_dict') as caught:
      score_state_dict(path)
    assert '\n' not in str(caught.value) and path in str(caught.value)


def _rewrite_pickle(source, target, edit):
  """Copies a checkpoint, applying `edit` to the bytes of its object pickle."""
  if open(source, 'rb').read(4) != b'PK\x03\x04':
    # Legacy: pickle GLOBAL opcodes are newline-terminated text, so the byte
    # string may change length without breaking the pickle.
    raw = open(source, 'rb').read()
    edited = edit(raw)
    assert edited != raw
    with open(target, 'wb') as out:
      out.write(edited)
    return
  with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, 'w') as dst:
    for info in src.infolist():
      data = src.read(info)
      if info.filename.endswith('/data.pkl'):
        edited = edit(data)
        assert edited != data
        data = edited
      dst.writestr(info, data)


# --- the paper's checkpoint through ncsn_tf.load and the import command ---------------

#: tf_configs/cifar10.cfg with the fixture's network: ngf 4 and 4 levels (σ 1 -> 0.01).
FIXTURE_FLAGS = dict(ngf=4, num_scales=4)


def _assert_reference_scores(pipe, expected):
  x, levels, want = expected['x'], expected['levels'], expected['score']
  got = pipe.score(x, pipe.sigmas[levels])
  np.testing.assert_allclose(got, want, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(want).max())


def test_load_gives_the_reference_scores_and_samples_with_annealed_langevin(expected):
  config = ncsn_tf.Config.from_flagfile('cifar10', **FIXTURE_FLAGS)
  pipe = ncsn_tf.load(_path('checkpoint_zip.pth'), config=config)
  assert pipe.source.kind == 'torch' and pipe.source.step == 2  # two Adam steps
  assert pipe.data_shape == (32, 32, 3) and pipe.sde is None and pipe.num_classes == 0
  _assert_reference_scores(pipe, expected)
  with pytest.raises(ValueError, match='^sigma: sigma off the ladder'):
    pipe.score(expected['x'], 0.5)  # a ladder network answers at its levels only
  samples = pipe.sample(2, n_steps_each=1, seed=0)  # the flagfile's annealed Langevin
  assert pipe.config.sampling.sampler == 'ald' and pipe.nfe == 4
  assert samples.shape == (2, 32, 32, 3) and samples.min() >= 0 and samples.max() <= 1


def test_a_config_of_another_network_says_what_to_pass():
  with pytest.raises(ValueError) as caught:
    ncsn_tf.load(_path('checkpoint_legacy.pth'), config='cifar10')
  assert str(caught.value) == (
      f"config: {_path('checkpoint_legacy.pth')} holds a network with ngf 4, num_scales 4; the "
      "config cifar10 has ngf 128, num_scales 10: pass "
      "config=ncsn_tf.Config.from_flagfile('cifar10', ngf=4, num_scales=4)")
  with pytest.raises(ValueError, match='^config: a checkpoint file holds no settings'):
    ncsn_tf.load(_path('checkpoint_legacy.pth'))


def test_the_import_command_writes_a_workdir_every_mode_loads(tmp_path, expected, capsys):
  workdir = tmp_path / 'ncsn_cifar10'
  # docs/images.md's first command, with the fixture's network (float32, as torch computes).
  argv = [_path('checkpoint_legacy.pth'), '--flagfile=tf_configs/cifar10.cfg', '--ngf=4',
          '--num_scales=4', '--precision=float32', f'--workdir={workdir}']
  assert import_checkpoint.main(argv) == 0
  assert capsys.readouterr().out.strip() == str(workdir)
  pipe = ncsn_tf.load(workdir)
  assert pipe.source.kind == 'workdir' and pipe.source.step == 2
  _assert_reference_scores(pipe, expected)
  assert import_checkpoint.main(argv) == 2  # never over an existing run's checkpoints
  assert 'already holds checkpoints' in capsys.readouterr().err
