"""`demo` runs every stage end to end (tiny settings here; `make demo` uses the defaults)."""

import json

from click.testing import CliRunner

from cli import cli


def test_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "64", "--epochs", "1", "--image-size", "64", "--cls-epochs", "1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for step in range(1, 9):
        assert f"[{step}/8]" in result.output
    assert "Demo finished" in result.output
    for path in ("seg-train/best.keras", "seg-eval/metrics.json", "segdir/segmented", "cls-tdbn/best.keras",
                 "cls-original_only/best.keras", "cls-eval/predictions.csv", "gradcam/figure7.png",
                 "gradcam/cams.npz", "predict/prediction.json"):
        assert (out / path).exists(), path
    cam = json.loads((out / "gradcam" / "cam_metrics.json").read_text())
    assert cam["mask_source"].startswith("ground truth") and set(cam["models"]) == {"model", "baseline"}
    # A second run reuses the data and the finished runs instead of failing on existing run folders.
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "synthetic data already in" in again.output
