"""The Python API: the README's notebook example runs as written; stage functions take configs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import skinkeras

ROOT = Path(__file__).resolve().parents[1]


def readme_example():
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- notebook-example -->\s*```python\n(.*?)```", text, re.S)
    assert found, "README lost its notebook example"
    return found.group(1)


def test_readme_notebook_example_runs_as_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"test balanced accuracy [0-9.]+ on [1-9][0-9]* images", out.stdout)
    # the contract line: inputs, logits layer and the two branches, the segmented one key-only
    assert " logits [" in out.stdout and "('segmented', 'segmented_encoder', True)" in out.stdout
    for name in ("nb/seg/best.keras", "nb/segdir/segmented", "nb/tdbn/best.keras", "nb/eval/predictions.csv"):
        assert (tmp_path / name).exists(), name


def test_api_exports_every_stage_and_builder():
    for name in skinkeras.__all__:
        assert getattr(skinkeras, name) is not None
    assert {"train_segmentation", "evaluate_segmentation", "segment", "train_classification",
            "evaluate_classification", "gradcam", "predict", "load_model", "build_tdbn", "build_deep_unet"} <= set(
        skinkeras.__all__)
