"""Shared fixtures: the shared real-data folder (skipped when absent) and a small synthetic dataset."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two host devices under JAX, for the data-parallel tests (tests/test_distribute.py); read when JAX starts, so it
# is set before any test imports it. Every other test runs on one device ("auto" is one device on a CPU).
if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKINKERAS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def full_size_backend():
    """The one backend the full-size (`slow`) model tests run on: the one that builds them fastest on a CPU.

    The full-size tests check the paper's structure (parameter counts, shapes), which the builders give alike on
    every backend (the cross-backend tests compare the same builders' outputs at small sizes); torch builds the
    full TDBN in 12 s where JAX needs minutes. SKINKERAS_FULL_SIZE_BACKENDS=all runs them on every backend.
    """
    import importlib.util

    return "torch" if importlib.util.find_spec("torch") is not None else "tensorflow"


def learning_backend():
    """The one backend the long `learning` tests (many epochs of a segmentation net) run on: JAX, where installed.

    Measured on the CI machine (2 cores, both lanes busy), the Deep-UNet's 8 synthetic epochs take 109 s under
    JAX, 225 s under torch and 451 s under TensorFlow, whose fixed cost is tracing the train step (150 s of 258 s
    alone), a tenth of the suite's lane. The layers and losses are the same Keras code on every backend, and
    the cross-backend tests hold the models' outputs equal; torch's training is exercised by the classifier
    tests of the core lane. SKINKERAS_FULL_SIZE_BACKENDS=all runs them on every backend.
    """
    import importlib.util

    return "jax" if importlib.util.find_spec("jax") is not None else full_size_backend()


@pytest.hookimpl(tryfirst=True)  # the demo marker must be on the items before `-m` selects
def pytest_collection_modifyitems(config, items):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    for item in items:
        # The tests that share the tiny demo run in one process, wherever the lane split of `make test` puts them.
        if "tiny_demo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.demo)
    if os.environ.get("SKINKERAS_FULL_SIZE_BACKENDS") == "all":
        return
    for marker, home, what in (("slow", full_size_backend(), "full-size structure"),
                               ("learning", learning_backend(), "learning over many epochs")):
        if backend == home:
            continue
        skip = pytest.mark.skip(reason=f"{what} is checked under {home} (SKINKERAS_FULL_SIZE_BACKENDS=all runs "
                                       "it here)")
        for item in items:
            if marker in item.keywords and "backend" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data of the developers' machines; a user's clone has none, so tests skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A small synthetic dataset in the official layouts, generated once per test session."""
    from skinkeras.data.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    return {name: Path(p) for name, p in make_synthetic(out, n=48, seed=0, image_size=(160, 120)).items()}


def run_python(code, backend, cwd=None, timeout=900):
    """Runs `code` in a fresh interpreter under KERAS_BACKEND=`backend`; returns stdout (raises on failure)."""
    import subprocess

    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{backend} subprocess failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def installed_backends():
    """Backends importable here (torch is optional)."""
    import importlib.util

    return [b for b in ("jax", "tensorflow", "torch") if importlib.util.find_spec(b) is not None]


# The tiny demo that test_demo.py and the report tests share: every stage once, each on a few images.
TINY_DEMO_ARGS = ["--n", "64", "--seg-n", "24", "--epochs", "2", "--image-size", "32", "--cls-epochs", "1",
                  "--cls-image-size", "32"]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Runs `cli.py demo` once at tiny settings; returns (its folder, its printed output)."""
    from click.testing import CliRunner

    from cli import cli

    out = tmp_path_factory.mktemp("tiny-demo") / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), *TINY_DEMO_ARGS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="session")
def cross_backend_runs(request, tmp_path_factory):
    """The selected cross-backend tests' payloads, run together in few interpreters (tests/cross_backend.py)."""
    from cross_backend import Runs

    return Runs(request.session, tmp_path_factory)
