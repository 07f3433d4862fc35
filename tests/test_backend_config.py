"""Quiet start-up: TensorFlow's C++ lines are dropped from a JAX or torch run unless --verbose; the rest stays."""

import importlib.util
import os
import subprocess
import sys

import pytest

from skinkeras.backend_config import STARTUP_NOISE, filtered_stderr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("W0000 00:00:1796138183.742348 18998 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
         "will not be used.\n")


def test_filtered_stderr_drops_noise_and_keeps_the_rest(capfd):
    with filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, NOISE.encode())
        os.write(2, b"UserWarning: the learning rate is NaN\n")
    captured = capfd.readouterr()
    assert captured.err == "UserWarning: the learning rate is NaN\n"


def test_the_noise_pattern_spares_ordinary_warnings():
    assert STARTUP_NOISE.search(NOISE)
    for line in ("UserWarning: Skipping variable loading for optimizer 'adam'", "Epoch 1/3",
                 "ValueError: cannot reshape", "RuntimeWarning: invalid value encountered in divide"):
        assert not STARTUP_NOISE.search(line), line


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed: no noise")
def test_a_torch_run_imports_tensorflow_quietly_unless_verbose():
    # keras.utils.set_random_seed imports TensorFlow whenever it is installed, whatever the backend.
    code = "import skinkeras, keras, sys; keras.utils.set_random_seed(0); assert 'tensorflow' in sys.modules"
    backend = "torch" if importlib.util.find_spec("torch") else "jax"
    env = {k: v for k, v in os.environ.items() if k not in ("SKINKERAS_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    quiet = subprocess.run([sys.executable, "-c", code], env=dict(env, KERAS_BACKEND=backend), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if STARTUP_NOISE.search(line)], quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], env=dict(env, KERAS_BACKEND=backend, SKINKERAS_VERBOSE="1"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert any(STARTUP_NOISE.search(line) for line in loud.stderr.splitlines()), loud.stderr
