"""Only five small modules import a backend, each where its nature demands it: the Grad-CAM gradient helper,
the backend configuration (JAX's compilation cache, precision support), the distribution set-up (JAX devices),
the bench's device probes (tracing, synchronisation, accelerator memory) and the exporters' runtimes (a
SavedModel and LiteRT run in TensorFlow, a torch.export program in torch). Everything else is `keras` /
`keras.ops`."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {"jax", "tensorflow", "torch"}
ALLOWED = {"skinkeras/explain/gradients.py": BACKENDS, "skinkeras/backend_config.py": {"jax"},
           "skinkeras/bench_backend.py": BACKENDS,
           "skinkeras/distribute.py": {"jax"}, "skinkeras/exporting/runtimes.py": {"tensorflow", "torch"}}


def backend_imports(path):
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in BACKENDS]
    return found


def test_only_the_five_backend_modules_import_a_backend():
    offenders = {}
    for path in [*sorted((ROOT / "skinkeras").rglob("*.py")), ROOT / "cli.py"]:
        rel = path.relative_to(ROOT).as_posix()
        if rel not in ALLOWED and backend_imports(path):
            offenders[rel] = backend_imports(path)
    assert not offenders, offenders
    for rel, backends in ALLOWED.items():
        assert {name.split(".")[0] for name in backend_imports(ROOT / rel)} == backends, rel


def test_the_check_sees_imports(tmp_path):
    probe = tmp_path / "x.py"
    probe.write_text("def f():\n    import torch.autograd\n    from jax import numpy\n")
    assert backend_imports(probe) == ["torch.autograd", "jax"]
