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
    assert modules_with_literal("metadata_mask") == ["skinkeras/models/contract.py"]
    assert modules_with_literal("logits") == ["skinkeras/models/contract.py"]
    # the segmented images' folder is named after the input they feed; both come from the contract module
    assert modules_with_literal("segmented") == ["skinkeras/models/contract.py"]
    assert modules_with_literal("masks") == ["skinkeras/data/segdir.py"]


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
