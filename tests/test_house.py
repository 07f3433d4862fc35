"""House rules checked on the source: names defined once, no Keras internals, stages import no trainer."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "skinkeras").rglob("*.py"))


def string_literals(path):
    """Every string constant of a module, docstrings excluded."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def modules_with_literal(value):
    return sorted(p.relative_to(ROOT).as_posix() for p in LIBRARY if value in string_literals(p))


def test_contract_names_and_the_segdir_layout_are_spelled_once():
    assert modules_with_literal("metadata_mask") == ["skinkeras/names.py"]
    assert modules_with_literal("logits") == ["skinkeras/names.py"]
    # the segmented images' folder is named after the input they feed; both come from the names module
    assert modules_with_literal("segmented") == ["skinkeras/names.py"]
    assert modules_with_literal("masks") == ["skinkeras/data/segdir.py"]


# Data flows downward: stages and orchestrators import these modules, never the other way round.
LOWER = [path for folder in ("data", "models", "layers", "pretrained", "trust")
         for path in (ROOT / "skinkeras" / folder).rglob("*.py")]
LOWER += [ROOT / "skinkeras" / name for name in ("config.py", "inference.py", "training.py", "names.py")]
UPPER = ("skinkeras.segmentation", "skinkeras.classification", "skinkeras.explain", "skinkeras.report",
         "skinkeras.reproduce", "skinkeras.bench", "skinkeras.demo", "skinkeras.exporting", "skinkeras.serving")


def imported_modules(path, root=ROOT):
    """Every module a file imports, at any depth (inside functions too); `from a import b` gives a and a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                package = path.relative_to(root).with_suffix("").parts[:-node.level]
                base = ".".join(filter(None, [*package, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports_of(path, prefixes, root=ROOT):
    return sorted(m for m in imported_modules(path, root) if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_lower_modules_import_no_stage_or_orchestrator():
    assert len(LOWER) > 20 and all(p.is_file() for p in LOWER)
    for path in LOWER:
        assert not imports_of(path, UPPER), f"{path.relative_to(ROOT)} imports {imports_of(path, UPPER)}"
    for path in [*(ROOT / "skinkeras" / "data").rglob("*.py"), ROOT / "skinkeras" / "names.py"]:
        assert not imports_of(path, ("skinkeras.models",)), f"{path.relative_to(ROOT)} imports a model module"
    assert not imports_of(ROOT / "skinkeras" / "names.py", ("skinkeras",))


def test_the_import_check_sees_every_form(tmp_path):
    probe = tmp_path / "skinkeras" / "data" / "x.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import skinkeras.bench\nfrom skinkeras import reproduce\n"
                     "def f():\n    from skinkeras.classification.records import dataset_classes\n"
                     "    from ..models import contract\n")
    assert imports_of(probe, UPPER + ("skinkeras.models",), root=tmp_path) == [
        "skinkeras.bench", "skinkeras.classification.records", "skinkeras.classification.records.dataset_classes",
        "skinkeras.models", "skinkeras.models.contract", "skinkeras.reproduce"]


def test_no_keras_internals_in_the_library():
    for path in LIBRARY:
        text = path.read_text()
        for name in ("_keras_history", "_inbound_nodes", "_flatten_layers"):
            assert name not in text, f"{path.relative_to(ROOT)} uses {name}"


def test_only_the_trainers_cli_and_demo_import_a_training_stage():
    # the bench times the training step exactly as the trainer compiles it; reproduce runs the trainers per row
    allowed = {"skinkeras/__init__.py", "skinkeras/demo.py", "skinkeras/bench.py", "skinkeras/reproduce.py", "skinkeras/segmentation/train.py",
               "skinkeras/classification/train.py", "skinkeras/training.py"}
    for path in LIBRARY:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".train"):
                assert rel in allowed, f"{rel} imports {node.module}"


def test_the_literal_check_sees_strings(tmp_path):
    probe = tmp_path / "x.py"
    probe.write_text('"""logits in a docstring."""\nX = {"logits": 1}\n')
    assert string_literals(probe) == ["logits"]
