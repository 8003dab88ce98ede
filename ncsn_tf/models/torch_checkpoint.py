"""Reads PyTorch checkpoints (`torch.save` files) into numpy, without torch.

The official NCSN checkpoints (ermongroup/ncsn) are written by

    torch.save([score.state_dict(), optimizer.state_dict()], 'checkpoint.pth')

with `score = torch.nn.DataParallel(CondRefineNetDilated(config))`, so every
parameter name starts with `module.`. They date from 2019 (PyTorch 1.0/1.1) and
use torch.save's *legacy* format; files saved by PyTorch >= 1.6 use its *zip*
format. This module reads both and returns the saved object with a numpy array
in place of each tensor:

    from ncsn_tf.models import torch_checkpoint
    score_state, optimizer_state = torch_checkpoint.load_state_dicts('checkpoint.pth')
    arrays = torch_checkpoint.score_state_dict('checkpoint.pth')  # {'module.begin_conv.weight': ...}
    assign_reference_weights(model, arrays)       # ncsn_tf.models.reference_weights

`ncsn_tf.load('checkpoint.pth', config='cifar10')` does all of this (docs/images.md).

Both formats pickle the object with Python's pickle, with two twists: tensors
are pickled as a call `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, backward_hooks[, metadata])`, and each storage (the flat
buffer of elements that one or more tensors view) is not pickled at all but
left as a *persistent id*, a tuple that the loader resolves:

Legacy format (torch.save(..., _use_new_zipfile_serialization=False), and every
torch.save before PyTorch 1.6): the file is a sequence of pickles, then bytes.
  1. the magic number 0x1950a86a20f9469cfc6c;
  2. the format's protocol version, 1001;
  3. a dict of the saving machine's facts ({'protocol_version', 'little_endian',
     'type_sizes'});
  4. the object itself, whose storages are persistent ids
     ('storage', storage_type, key, location, numel, view_metadata):
     storage_type is a class such as torch.FloatStorage (it gives the element
     type), key names the storage, location is where it lived ('cpu',
     'cuda:0'; we read everything to host memory), numel counts its elements,
     and view_metadata is None or (view_key, offset, numel) for a storage that
     is a slice of another (PyTorch >= 0.4 always writes None; GPU-trained
     checkpoints name the CPU class, torch.FloatStorage, with 'cuda:0');
  5. the sorted list of storage keys;
  6. for each key in that order: its element count as a little-endian int64,
     then its elements' raw little-endian bytes.
  Because the bytes come after the pickle, a tensor is built before its data
  is read: we allocate each storage's array when the pickle names it, build
  tensors as views of it, and fill it in place afterwards.

Zip format (PyTorch >= 1.6 default): an uncompressed zip archive whose records
all lie under one folder (`<name>/`, usually the file's stem or 'archive'):
  <name>/data.pkl     the object, whose storages are persistent ids
                      ('storage', storage_type, key, location, numel);
  <name>/data/<key>   each storage's raw bytes (numel elements);
  <name>/byteorder    'little' or 'big' (absent in files from before it was
                      added: those are little-endian);
  <name>/version, .format_version, .storage_alignment, ... (not needed here).
  A tensor whose dtype has no typed storage class (uint16, float8, ...) is
  pickled with `_rebuild_tensor_v3(..., dtype)` over a torch.storage.UntypedStorage
  of bytes; we reinterpret those bytes as the dtype.

In both formats several tensors may view one storage (a transposed, sliced or
expanded tensor saves its whole storage, with its offset and strides in
elements). We return such tensors as numpy views of one shared array, as torch
does, so they share memory; a stride-0 (expanded) tensor aliases its elements.

Safety: pickle can call any importable function. We unpickle with an allow-list
(`find_class`) that maps the few globals a checkpoint of tensors and plain
Python values needs (the tensor/parameter rebuild functions, storage classes,
dtypes, collections.OrderedDict) to our own numpy implementations; any other
global (a pickled nn.Module, os.system, numpy objects, ...) is refused with a
ValueError naming it, and nothing from torch is ever imported or called.

Element types read: float64, float32, float16, int64, int32, int16, int8,
uint8, bool, complex64, complex128, and (zip format, via _rebuild_tensor_v3)
uint16/uint32/uint64. bfloat16, float8 and quantized storages have no numpy
dtype and raise a ValueError. Sparse, quantized and nested tensors, and
PyTorch < 0.4's tar format, are not read.

Errors are one-line: FileNotFoundError for a missing file, ValueError (with
the path) for a file that is not a torch checkpoint, is truncated or corrupt,
holds an unsupported element type or a refused global, or (score_state_dict)
holds no state_dict.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

__all__ = ['DATA_PARALLEL_PREFIX', 'load_state_dicts', 'score_state_dict', 'score_state_of',
           'training_step']

DATA_PARALLEL_PREFIX = 'module.'

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_SIGNATURE = b'PK\x03\x04'

# Storage classes (torch.FloatStorage, ...) by name -> element type as stored on
# disk (little-endian), or None where numpy has no such type. torch.save pickles
# CUDA storages under these CPU names too (the device is in `location`).
_STORAGE_DTYPES = {
    'DoubleStorage': '<f8', 'FloatStorage': '<f4', 'HalfStorage': '<f2',
    'LongStorage': '<i8', 'IntStorage': '<i4', 'ShortStorage': '<i2',
    'CharStorage': 'i1', 'ByteStorage': 'u1', 'BoolStorage': '?',
    'ComplexDoubleStorage': '<c16', 'ComplexFloatStorage': '<c8',
    'BFloat16Storage': None, 'QInt8Storage': None, 'QUInt8Storage': None,
    'QInt32Storage': None, 'QUInt4x2Storage': None, 'QUInt2x4Storage': None,
}
# torch dtypes by the name they pickle as (torch.float32 -> global 'torch float32'),
# for _rebuild_tensor_v3; None: no numpy equivalent.
_TORCH_DTYPES = {
    'float64': '<f8', 'float32': '<f4', 'float16': '<f2', 'int64': '<i8',
    'int32': '<i4', 'int16': '<i2', 'int8': 'i1', 'uint8': 'u1', 'bool': '?',
    'uint16': '<u2', 'uint32': '<u4', 'uint64': '<u8', 'complex64': '<c8',
    'complex128': '<c16', 'bfloat16': None, 'complex32': None,
    'float8_e4m3fn': None, 'float8_e5m2': None, 'float8_e4m3fnuz': None,
    'float8_e5m2fnuz': None, 'float8_e8m0fnu': None,
}


class _FormatError(Exception):
  """A problem with the file's contents; re-raised as ValueError with the path."""


class _Truncated(_FormatError):
  """The file ends before the format says it should."""


# What allow-listed globals unpickle to are shared by every load, so they are
# immutable tuples: pickle's BUILD opcode sets attributes on whatever object a
# file names, and a file must not be able to change how later files are read
# (say, a storage class's element type or a function's default arguments).
class _StorageType(NamedTuple):
  """Stands in for a storage class (torch.FloatStorage ...): its element type."""
  qualified_name: str
  dtype: str | None

  def checked_dtype(self) -> np.dtype:
    if self.dtype is None:
      raise _FormatError(f'{self.qualified_name} holds an element type numpy cannot '
                         f'represent; supported: {_supported()}')
    return np.dtype(self.dtype)


class _TorchDtype(NamedTuple):
  """Stands in for a torch dtype (torch.float32 ...)."""
  name: str
  dtype: str | None


class _Function(NamedTuple):
  """An allow-listed function, callable from a pickle but not modifiable by it."""
  function: Callable[..., Any]

  def __call__(self, *args):
    return self.function(*args)


class _Storage:
  """One storage: its elements as a flat numpy array that tensors view.

  `byteorder` ('<' or '>') is the order of the file's bytes, which a byte
  (untyped) storage keeps and _rebuild_tensor_v3 needs to reinterpret them.
  """

  def __init__(self, array: np.ndarray, byteorder: str = '<'):
    self.array = array
    self.byteorder = byteorder


def _native(dtype: np.dtype) -> np.dtype:
  """The same element type in this machine's byte order, spelled plainly (float32)."""
  return np.dtype(dtype.char)


def _supported() -> str:
  return ', '.join(name for name, dtype in _TORCH_DTYPES.items() if dtype)


def _strided(storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
  """A tensor as a numpy view of its storage: offset and strides are in elements.

  numpy's as_strided does no bounds checks, so every index a view can reach is
  checked against the storage first: a corrupt file must raise, not read
  memory outside the buffer.
  """
  if not isinstance(storage, _Storage):
    raise _FormatError(f'a tensor refers to {type(storage).__name__}, not a storage')
  size, stride = tuple(size), tuple(stride)
  if not all(isinstance(v, int) for v in (offset, *size, *stride)) or len(size) != len(stride):
    raise _FormatError(f'bad tensor geometry: offset {offset!r}, size {size!r}, stride {stride!r}')
  base = storage.array
  if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
    raise _FormatError(f'negative tensor offset, size or stride: {offset}, {size}, {stride}')
  if 0 in size:  # an empty tensor reaches no element; its offset may be anything
    return np.empty(size, base.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= base.size:
    raise _FormatError(f'a tensor (offset {offset}, size {size}, stride {stride}) reaches '
                       f'element {last} of a storage of {base.size}')
  return np.lib.stride_tricks.as_strided(
      base[offset:], shape=size, strides=[s * base.itemsize for s in stride])


def _apply_metadata(array: np.ndarray, metadata: Any) -> np.ndarray:
  """Applies a tensor's lazy 'neg'/'conj' bits (torch stores the unnegated data)."""
  if not metadata:
    return array
  if not isinstance(metadata, dict) or set(metadata) - {'neg', 'conj'}:
    raise _FormatError(f'unsupported tensor metadata {metadata!r}')
  if metadata.get('neg'):
    array = -array
  if metadata.get('conj'):
    array = np.conj(array)
  return array


# Our stand-ins for the functions a checkpoint's pickle calls. Their signatures
# follow torch's pickled argument lists; requires_grad and backward hooks have
# no meaning for an array and are dropped.
def _rebuild_tensor(storage, offset, size, stride):
  return _strided(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
  del requires_grad, backward_hooks
  return _apply_metadata(_strided(storage, offset, size, stride), metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  """A tensor over an untyped (byte) storage: the dtype comes as an argument."""
  del requires_grad, backward_hooks
  if not isinstance(storage, _Storage) or not isinstance(dtype, _TorchDtype):
    raise _FormatError('_rebuild_tensor_v3 without a byte storage and a dtype')
  if dtype.dtype is None:
    raise _FormatError(f'torch.{dtype.name} tensors have no numpy dtype; supported: {_supported()}')
  as_bytes = storage.array.view(np.uint8)
  file_dtype = np.dtype(dtype.dtype).newbyteorder(storage.byteorder)
  if as_bytes.size % file_dtype.itemsize:
    raise _FormatError(f'a storage of {as_bytes.size} bytes does not hold whole {dtype.name}s')
  typed = _Storage(as_bytes.view(file_dtype))
  array = _apply_metadata(_strided(typed, offset, size, stride), metadata)
  # A view while the file's order is this machine's; a native copy otherwise.
  native = _native(file_dtype)
  return array.astype(native, copy=False).view(native)


def _rebuild_parameter(data, requires_grad, backward_hooks):
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  del requires_grad, backward_hooks, state  # Python attributes set on the Parameter
  return data


def _allowed_globals() -> dict[tuple[str, str], Any]:
  """(module, name) -> what an allowed global unpickles to."""
  allowed: dict[tuple[str, str], Any] = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor'): _Function(_rebuild_tensor),
      ('torch._utils', '_rebuild_tensor_v2'): _Function(_rebuild_tensor_v2),
      ('torch._utils', '_rebuild_tensor_v3'): _Function(_rebuild_tensor_v3),
      ('torch._utils', '_rebuild_parameter'): _Function(_rebuild_parameter),
      ('torch._utils', '_rebuild_parameter_with_state'): _Function(_rebuild_parameter_with_state),
      ('torch.storage', 'UntypedStorage'): _StorageType('torch.storage.UntypedStorage', 'u1'),
      ('torch', 'UntypedStorage'): _StorageType('torch.UntypedStorage', 'u1'),
  }
  for name, dtype in _STORAGE_DTYPES.items():
    allowed[('torch', name)] = _StorageType(f'torch.{name}', dtype)
  for name, dtype in _TORCH_DTYPES.items():
    allowed[('torch', name)] = _TorchDtype(name, dtype)
  return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler that resolves only allow-listed globals and storage ids."""

  def __init__(self, file, resolve_storage=None):
    super().__init__(file)
    self._resolve_storage = resolve_storage

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except (KeyError, TypeError):
      raise _FormatError(
          f'refusing to load global {module}.{name}: only tensors, storages, OrderedDict and '
          'plain Python values are read (a pickled module or class is not a state_dict)') from None

  def persistent_load(self, pid):
    if self._resolve_storage is None:
      raise _FormatError('unexpected persistent id outside the main pickle')
    if not isinstance(pid, tuple) or not pid:
      raise _FormatError(f'bad persistent id {pid!r}')
    kind = pid[0].decode('ascii') if isinstance(pid[0], bytes) else pid[0]
    if kind != 'storage':
      raise _FormatError(f"unsupported persistent id {kind!r} (only 'storage' is read)")
    return self._resolve_storage(pid[1:])


def _unpickle(file, resolve_storage=None) -> Any:
  """One pickle from `file`, leaving the file just past its STOP opcode."""
  try:
    return _RestrictedUnpickler(file, resolve_storage).load()
  except _FormatError:
    raise
  except EOFError:
    raise _Truncated('truncated: the file ends inside a pickle') from None
  except pickle.UnpicklingError as error:
    if 'truncated' in str(error):
      raise _Truncated('truncated: the file ends inside a pickle') from None
    raise _FormatError(f'corrupt pickle: {error}') from None
  except Exception as error:  # pylint: disable=broad-except
    # Random bytes make pickle fail in many ways (bad opcodes, wrong stack
    # contents, calls with the wrong arguments); all mean a corrupt file.
    raise _FormatError(f'corrupt pickle: {type(error).__name__}: {error}') from None


def _storage_key(key: Any) -> str:
  if isinstance(key, bytes):
    key = key.decode('ascii')
  if not isinstance(key, str):
    raise _FormatError(f'bad storage key {key!r}')
  return key


def _storage_dtype(storage_type: Any) -> np.dtype:
  if not isinstance(storage_type, _StorageType):
    raise _FormatError(f'a storage of type {storage_type!r}, not a storage class')
  return storage_type.checked_dtype()


def _check_numel(numel: Any) -> int:
  if not isinstance(numel, int) or numel < 0:
    raise _FormatError(f'bad storage size {numel!r}')
  return numel


def _load_legacy(file, file_size: int) -> Any:
  """Reads the legacy format (see the module docstring) from an open file."""
  # The magic number's pickle is at most ~40 bytes in any pickle protocol. Probe
  # a copy of the head, so that an arbitrary file cannot make pickle allocate
  # whatever length its first bytes happen to announce.
  probe = io.BytesIO(file.read(64))
  try:
    magic = _unpickle(probe)
  except _FormatError:
    magic = None
  if type(magic) is not int or magic != _LEGACY_MAGIC:  # pylint: disable=unidiomatic-typecheck
    raise _FormatError('not a PyTorch checkpoint (neither torch.save\'s zip nor its legacy format)')
  file.seek(probe.tell())
  protocol = _unpickle(file)
  if protocol != _LEGACY_PROTOCOL:
    raise _FormatError(f'legacy torch.save protocol {protocol!r} is not supported (only 1001)')
  sys_info = _unpickle(file)
  # The element counts were written in the saving machine's byte order; the
  # elements themselves always little-endian.
  little = not isinstance(sys_info, dict) or sys_info.get('little_endian', True)
  count_order = '<' if little else '>'

  storages: dict[str, _Storage] = {}  # root storages by key, in need of their bytes
  views: dict[str, _Storage] = {}

  def resolve(args):
    if len(args) != 5:
      raise _FormatError(f'legacy storage id with {len(args)} fields, expected 5')
    storage_type, key, _location, numel, view_metadata = args
    dtype, key, numel = _storage_dtype(storage_type), _storage_key(key), _check_numel(numel)
    if key not in storages:
      # The bytes come later; refuse sizes the file cannot hold before allocating.
      if numel * dtype.itemsize > file_size:
        raise _Truncated(f'truncated or corrupt: storage {key} of {numel} elements is larger '
                         f'than the file ({file_size} bytes)')
      storages[key] = _Storage(np.empty(numel, dtype))
    root = storages[key]
    if root.array.dtype != dtype or root.array.size != numel:
      raise _FormatError(f'storage {key} is named with two types or sizes')
    if view_metadata is None:
      return root
    view_key, offset, view_numel = view_metadata
    view_key = _storage_key(view_key)
    if view_key not in views:
      if not (isinstance(offset, int) and isinstance(view_numel, int) and 0 <= offset
              and 0 <= view_numel and offset + view_numel <= numel):
        raise _FormatError(f'storage view {view_key} lies outside storage {key}')
      views[view_key] = _Storage(root.array[offset:offset + view_numel])
    return views[view_key]

  obj = _unpickle(file, resolve)
  keys = _unpickle(file)
  if not isinstance(keys, list):
    raise _FormatError('corrupt: no list of storage keys after the object')
  for key in keys:
    key = _storage_key(key)
    if key not in storages:
      raise _FormatError(f'corrupt: storage {key} has bytes but no tensor names it')
    array = storages[key].array
    header = file.read(8)
    if len(header) < 8:
      raise _Truncated(f'truncated: the file ends before storage {key}')
    (numel,) = struct.unpack(count_order + 'q', header)
    if numel != array.size:
      raise _FormatError(f'corrupt: storage {key} has {numel} elements on disk, '
                         f'{array.size} in the pickle')
    got = file.readinto(memoryview(array).cast('B')) if array.nbytes else 0
    if got != array.nbytes:
      raise _Truncated(f'truncated: storage {key} needs {array.nbytes} bytes, the file has {got}')
  return obj


def _load_zip(path: str) -> Any:
  """Reads the zip format (see the module docstring)."""
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError) as error:
    # The central directory sits at the end, so a cut-off file looks like this.
    raise _Truncated(f'truncated or corrupt zip archive ({error})') from None
  with archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
      raise _FormatError('a zip archive without one <folder>/data.pkl: not a torch.save file')
    folder = pickles[0][:-len('data.pkl')]
    names = set(archive.namelist())
    byteorder = 'little'
    if folder + 'byteorder' in names:
      byteorder = archive.read(folder + 'byteorder').decode('ascii', 'replace')
      if byteorder not in ('little', 'big'):
        raise _FormatError(f'unknown byteorder {byteorder!r}')
    storages: dict[str, _Storage] = {}

    def resolve(args):
      if len(args) != 4:
        raise _FormatError(f'zip storage id with {len(args)} fields, expected 4')
      storage_type, key, _location, numel = args
      dtype, key, numel = _storage_dtype(storage_type), _storage_key(key), _check_numel(numel)
      if key in storages:
        return storages[key]
      record = f'{folder}data/{key}'
      if record not in names:
        raise _FormatError(f'corrupt: storage record {record} is missing')
      if archive.getinfo(record).file_size != numel * dtype.itemsize:
        raise _FormatError(f'corrupt: {record} holds {archive.getinfo(record).file_size} bytes, '
                           f'not {numel} × {dtype.itemsize}')
      file_dtype = dtype.newbyteorder('<' if byteorder == 'little' else '>')
      array = np.empty(numel, file_dtype)
      with archive.open(record) as data:
        if array.nbytes and data.readinto(memoryview(array).cast('B')) != array.nbytes:
          raise _Truncated(f'truncated: {record}')
      # Bring the elements to this machine's order before any tensor views them
      # (a no-op for bytes; _rebuild_tensor_v3 reinterprets those itself).
      native = _native(dtype)
      storages[key] = _Storage(array.astype(native, copy=False).view(native),
                               '<' if byteorder == 'little' else '>')
      return storages[key]

    try:
      with archive.open(pickles[0]) as data_pkl:
        return _unpickle(io.BytesIO(data_pkl.read()), resolve)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
      raise _Truncated(f'truncated or corrupt zip archive ({error})') from None


def load_state_dicts(path: str | os.PathLike) -> Any:
  """Everything a `torch.save` file holds, with numpy arrays in place of tensors.

  For an ermongroup/ncsn checkpoint this is `[score_state, optimizer_state]`:
  an OrderedDict of parameter name -> array, and the optimizer's
  {'state': {index: {'step': ..., 'exp_avg': array, 'exp_avg_sq': array}},
  'param_groups': [{'lr': ..., 'betas': (...), ..., 'params': [indices]}]}.
  Containers, numbers and strings come back as pickle made them (lists,
  tuples, dicts, OrderedDicts); torch.nn.Parameter becomes a plain array.
  Tensors that shared a storage come back as numpy views sharing memory.

  Args:
    path: a file written by torch.save, in its legacy or its zip format.

  Returns:
    The saved object.

  Raises:
    FileNotFoundError: there is no such file.
    ValueError: the file is not a torch.save checkpoint, is truncated or
      corrupt, holds a tensor element type numpy lacks (bfloat16, float8,
      quantized), or pickles a global outside the allow-list (a whole
      nn.Module, arbitrary callables). The message is one line and names the
      file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no such checkpoint file: {path}')
  try:
    with open(path, 'rb') as file:
      head = file.read(512)
      file.seek(0)
      if head.startswith(_ZIP_SIGNATURE):
        return _load_zip(path)
      if len(head) >= 262 and head[257:262] == b'ustar':
        raise _FormatError('a tar archive: the tar format of PyTorch < 0.4 is not supported')
      return _load_legacy(file, os.path.getsize(path))
  except _FormatError as error:
    raise ValueError(f'{path}: {error}') from None


def _is_state_dict(obj: Any) -> bool:
  return (isinstance(obj, Mapping) and len(obj) > 0
          and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))


def _describe(obj: Any) -> str:
  if isinstance(obj, (list, tuple)):
    return f'a {type(obj).__name__} of {len(obj)} items' + (
        f' whose first is {_describe(obj[0])}' if obj else '')
  if isinstance(obj, Mapping):
    return f'a {type(obj).__name__} of {len(obj)} entries, not all name -> array'
  if isinstance(obj, np.ndarray):
    return f'a single array of shape {obj.shape}'
  return f'a {type(obj).__name__}'


def score_state_dict(path: str | os.PathLike, *,
                     strip_data_parallel_prefix: bool = False) -> dict[str, np.ndarray]:
  """The score network's state_dict from an ermongroup/ncsn checkpoint.

  The official runner saves `[score.state_dict(), optimizer.state_dict()]`;
  this returns element 0 as {name: numpy array}, in the saved order. A file
  holding a bare state_dict (`torch.save(model.state_dict(), ...)`) is
  accepted too.

  Names are kept as saved, i.e. with torch.nn.DataParallel's `module.` prefix
  for the official checkpoints (`assign_reference_weights` accepts names with
  or without it). With strip_data_parallel_prefix=True the prefix is removed
  when every name has it, giving the names of the unwrapped
  CondRefineNetDilated.

  Raises:
    FileNotFoundError, ValueError: as load_state_dicts, and ValueError when
      the file holds no state_dict (a mapping of names to tensors) there.
  """
  state = score_state_of(load_state_dicts(path), path)
  if strip_data_parallel_prefix and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
    state = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
  return state


def score_state_of(obj: Any, path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The score state_dict (names as saved) of what `load_state_dicts(path)` returned."""
  if isinstance(obj, (list, tuple)) and obj and _is_state_dict(obj[0]):
    return dict(obj[0])
  if _is_state_dict(obj):
    return dict(obj)
  raise ValueError(f'{os.fspath(path)}: holds no state_dict: expected [score state_dict, '
                   f'optimizer state_dict] as ermongroup/ncsn saves, found {_describe(obj)}')


def training_step(obj: Any) -> int | None:
  """The Adam step count of an ermongroup/ncsn checkpoint (what `load_state_dicts` returned):
  the training iterations it was saved after; None when the file holds no optimizer state."""
  if not (isinstance(obj, (list, tuple)) and len(obj) > 1 and isinstance(obj[1], Mapping)):
    return None
  steps = [entry.get('step') for entry in dict(obj[1].get('state') or {}).values()
           if isinstance(entry, Mapping)]
  steps = [int(np.asarray(s)) for s in steps if s is not None and np.asarray(s).size == 1]
  return max(steps) if steps else None
