"""`demo` runs every stage end to end (tiny settings here; `make demo` uses the defaults)."""

import json

from click.testing import CliRunner
from conftest import TINY_DEMO_ARGS

from cli import cli


def test_demo_runs_every_stage_and_writes_the_report(tiny_demo):
    out, output = tiny_demo
    for step in range(1, 10):
        assert f"[{step}/9]" in output
    assert "Demo finished" in output
    for path in ("seg-train/best.keras", "seg-train/report.html", "seg-eval/metrics.json", "seg-eval/worst.csv",
                 "segdir/segmented", "cls-tdbn/best.keras", "cls-tdbn/val_predictions.csv",
                 "cls-original_only/report.html", "cls-eval-tdbn/predictions.csv",
                 "cls-eval-original_only/predictions.csv", "gradcam/figure7.png", "gradcam/cams.npz", "layercam/cam_metrics.json",
                 "predict/prediction.json", "report.html"):
        assert (out / path).exists(), path
    assert f"report:           {out / 'report.html'}" in output
    for method in ("gradcam", "layercam"):
        cam = json.loads((out / method / "cam_metrics.json").read_text())
        assert cam["method"] == method and cam["mask_source"].startswith("ground truth")
        assert set(cam["models"]) == {"model", "baseline"}
        # The explained layer is each encoder's stride-8 map, named in the measures.
        layers = {b["layer"] for m in cam["models"].values() for b in m["branches"].values()}
        assert layers == {"original_encoder/block_6_expand_relu", "segmented_encoder/block_6_expand_relu"}
    # predict names the true class of the held-out image it classified.
    truth = [line for line in output.splitlines() if "(true class: " in line]
    assert truth and truth[0].split("(true class: ")[1].rstrip(")") in {"akiec", "bcc", "bkl", "df", "mel", "nv",
                                                                           "vasc"}


def test_demo_numbers_at_tiny_settings(tiny_demo):
    out, _ = tiny_demo
    # Two epochs on 19 training pairs at 32 px already find the lesions (measured: held-out Dice 0.7-0.8); the
    # classifier after one epoch is not stable at this size, so only its bookkeeping is checked.
    seg = json.loads((out / "seg-eval" / "metrics.json").read_text())
    assert seg["images"] == 4 and seg["dice"] > 0.5
    cls = json.loads((out / "cls-eval-tdbn" / "metrics.json").read_text())
    split = (out / "cls-tdbn" / "split.csv").read_text().splitlines()
    assert cls["images"] == sum(line.split(",")[4] == "test" for line in split[1:])


def test_demo_resumes(tiny_demo):
    out, _ = tiny_demo
    again = CliRunner().invoke(cli, ["demo", "--out", str(out), *TINY_DEMO_ARGS], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "synthetic data already in" in again.output
