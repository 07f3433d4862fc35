"""Backend configuration in one place: TensorFlow's start-up noise on stderr, JAX's compilation cache (no Keras import).

Keras imports TensorFlow whenever it is installed, also under JAX and torch (to seed it in
`keras.utils.set_random_seed`, to recognise `tf.TensorShape` when saving). TensorFlow's C++
start-up then writes lines such as "Could not find cuda drivers on your machine" and
"oneDNN custom operations are on" straight to file descriptor 2, before any Python logging
setting applies (TF_CPP_MIN_LOG_LEVEL does not reach them). `quiet_tensorflow_startup`
makes that first import run with descriptor 2 captured and writes back every line that is
not such start-up noise, so warnings that matter stay visible.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile

# Lines TensorFlow and its bundled XLA/absl print at import on a machine without a GPU.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|Could not find cuda drivers|"
    r"cpu_feature_guard\.cc|To enable the following instructions|rebuild TensorFlow with the appropriate compiler|"
    r"oneDNN custom operations are on|TF_ENABLE_ONEDNN_OPTS|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|TF-TRT Warning|cuda_executor\.cc|cuInit|"
    r"failed call to cuInit|This TensorFlow binary is optimized"
)


@contextlib.contextmanager
def filtered_stderr(pattern=STARTUP_NOISE):
    """Captures file descriptor 2 for the block, then writes back the lines that do not match `pattern`.

    Args:
        pattern: compiled regular expression of the lines to drop.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if line.strip() and not pattern.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)  # one import to quieten; later lookups take the normal path
        with filtered_stderr():
            self.loader.exec_module(module)
            if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
                # Keras only needs TensorFlow's Python side here; kept off the GPUs it cannot take memory the
                # JAX or torch run needs (and its CUDA probe writes its lines while they are still filtered).
                with contextlib.suppress(Exception):
                    module.config.set_visible_devices([], "GPU")


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the import of `tensorflow`; leaves the import system once that has run.

    It stays through mere availability checks (`importlib.util.find_spec("tensorflow")`, which
    several libraries call at import time without importing it).
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


VERBOSE_ENV = "SKINKERAS_VERBOSE"


def quiet_tensorflow_startup():
    """Makes the process's first TensorFlow import (whoever triggers it) drop TensorFlow's start-up noise.

    Does nothing when TensorFlow is already imported or not installed, or when the
    environment variable SKINKERAS_VERBOSE is set (`python cli.py --verbose ...`).
    """
    if os.environ.get(VERBOSE_ENV) or "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


JAX_CACHE_ENV = "SKINKERAS_JAX_CACHE"


def jax_cache_dir():
    """Folder of JAX's persistent compilation cache: $SKINKERAS_JAX_CACHE, else KERAS_HOME/jax_cache; None if "off"."""
    value = os.environ.get(JAX_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else os.path.expanduser(value)
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "jax_cache")


def enable_jax_compilation_cache():
    """Turns on JAX's persistent compilation cache for this process (JAX backend only); returns its folder or None.

    keras 3.15.1 has no switch for it. JAX caches nothing by default below 1 s of compile time, and
    nothing at all until a cache folder is set, so the thresholds are lowered here: a second run of
    the same model (another process, a resumed run, a test session) reads the compiled XLA programs
    back instead of compiling again. Set SKINKERAS_JAX_CACHE=off to disable, or to a folder to move it.
    """
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "jax":
        return None
    folder = jax_cache_dir()
    if folder is None:
        return None
    import jax

    try:
        os.makedirs(folder, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    except OSError as exc:  # a read-only home: compile as before, say why once
        sys.stderr.write(f"JAX compilation cache off: cannot create {folder} ({exc.strerror})\n")
        return None
    return folder


def _current_backend():
    """The backend Keras chose (env or keras.json) once it is imported, else the one KERAS_BACKEND names."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None else os.environ.get("KERAS_BACKEND", "tensorflow")


def precision_unsupported(precision):
    """Why this process's backend and device cannot compute in `precision` (a --precision value), or None.

    Measured: JAX on a CPU fails at the first matrix product of a float16 model (XLA's CPU `dot_general`
    has no F16_F16_F32 kernel, the float32 accumulation Keras asks for); bfloat16 works there.

    Args:
        precision: fp32 | bf16 | fp16, or None.
    """
    if precision != "fp16" or _current_backend() != "jax":
        return None
    import jax

    if jax.default_backend() != "cpu":
        return None
    return ("--precision fp16 on JAX needs a GPU: XLA's CPU matrix products have no float16 kernel with float32 "
            "accumulation; use bf16 on a CPU, or the tensorflow / torch backend")


def data_format_unsupported(data_format):
    """Why this process's backend and device cannot run the encoders in `data_format`, or None.

    Measured: TensorFlow on a CPU fails at the first NCHW convolution (`UnimplementedError`: its CPU Conv2D
    kernels are NHWC only, eager and in graphs); torch and JAX run both layouts.

    Args:
        data_format: channels_last | channels_first, or None.
    """
    if data_format != "channels_first" or _current_backend() != "tensorflow":
        return None
    from skinkeras.distribute import tensorflow_gpus

    if tensorflow_gpus():
        return None
    return ("channels_first on TensorFlow needs a GPU: its CPU convolutions are NHWC only; use channels_last, "
            "or the torch / jax backend")
