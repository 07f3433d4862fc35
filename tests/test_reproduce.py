"""`reproduce` end to end on the synthetic set: Table 1 and Table 3 rows, paper beside ours, intervals, resume."""

import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from cli import cli
from skinkeras.data.synthetic import make_synthetic
from skinkeras.reproduce import paper_tables

TOML = """
[segmentation]
weights = "none"
batch_size = 4
decoder_filters = [32, 16, 16, 8, 8]
aspp_filters = 16

[classification]
weights = "none"
batch_size = 8
ffn_dim = 64
head_units = [32]
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    # Small sets: 12 segmentation pairs, 28 HAM10000 images (3 lesions a class), 8 PH2 images.
    data = {name: folder for n, name in ((12, "isic2018"), (28, "ham10000"), (8, "ph2"))
            for folder in make_synthetic(root / "data", n=n, seed=2, image_size=(64, 48), datasets=(name,)).values()}
    config = root / "small.toml"
    config.write_text(TOML)
    args = ["reproduce", "table1", "table3", "--config", config, "--data-dir", data["ham10000"],
            "--seg-data-dir", data["isic2018"], "--encoder", "mobilenetv2", "--image-size", 32, "--epochs", 1,
            "--rows", "deep_unet,original_only,tdbn", "--external", f"ph2={data['ph2']}", "--bootstrap", 200,
            "--out", root / "results"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return root / "results", args, result.output


def test_every_row_beside_the_paper_with_intervals(reproduced):
    out, _, output = reproduced
    assert "4 of 4 rows done" in output
    results = pd.read_csv(out / "results.csv").set_index("row")
    assert list(results.index) == ["deep_unet", "original_only", "tdbn", "anchor"]
    paper = paper_tables()
    # The paper's numbers come from the data file, ours from each row's own evaluation folder.
    assert results.loc["deep_unet", "paper_dice"] == paper["table1"]["rows"]["deep_unet"]["dice"]
    assert results.loc["tdbn", "paper_accuracy"] == paper["table3"]["rows"]["tdbn"]["ham10000"]["accuracy"]
    seg = json.loads((out / "evals" / "seg-deep_unet" / "metrics.json").read_text())
    assert results.loc["deep_unet", "dice"] == pytest.approx(seg["dice"])
    assert [results.loc["deep_unet", "dice_low"], results.loc["deep_unet", "dice_high"]] == pytest.approx(
        seg["intervals"]["dice"])
    for row in ("original_only", "tdbn"):
        cls = json.loads((out / "evals" / f"cls-{row}" / "metrics.json").read_text())
        assert results.loc[row, "balanced_accuracy"] == pytest.approx(cls["balanced_accuracy"])
        # Resampled by lesion: as many groups as the test split has lesions.
        split = pd.read_csv(out / "runs" / f"cls-{row}" / "split.csv")
        assert cls["bootstrap"]["groups"] == split[split.subset == "test"].lesion_id.nunique()
        assert cls["bootstrap"]["resamples"] == 200
        low, high = cls["intervals"]["balanced_accuracy"]
        assert low <= cls["balanced_accuracy"] <= high
        assert results.loc[row, "ph2_images"] == 8
    # TDBN against the original-only reference: a paired difference, written into the row's cls-eval too.
    tdbn = json.loads((out / "evals" / "cls-tdbn" / "metrics.json").read_text())
    diff = tdbn["paired"]["balanced_accuracy"]
    assert results.loc["tdbn", "balanced_accuracy_vs_ref"] == pytest.approx(diff["difference"])
    ref = json.loads((out / "evals" / "cls-original_only" / "metrics.json").read_text())
    assert diff["difference"] == pytest.approx(tdbn["balanced_accuracy"] - ref["balanced_accuracy"], abs=1e-9)
    assert diff["interval"][0] <= diff["difference"] <= diff["interval"][1]
    assert pd.isna(results.loc["original_only", "balanced_accuracy_vs_ref"])
    # The anchor is a row of its own, fitted on the reference row's training split and scored on its test lesions.
    anchor = json.loads((out / "evals" / "cls-anchor-original_only" / "metrics.json").read_text())
    assert results.loc["anchor", "balanced_accuracy"] == pytest.approx(anchor["balanced_accuracy"])
    assert anchor["images"] == ref["images"]
    anchor_ids = pd.read_csv(out / "evals" / "cls-anchor-original_only" / "predictions.csv").image
    ref_ids = pd.read_csv(out / "evals" / "cls-original_only" / "predictions.csv").image
    assert sorted(anchor_ids) == sorted(ref_ids)
    assert results.loc["anchor", "balanced_accuracy_vs_ref"] == pytest.approx(  # results.csv keeps 6 decimals
        anchor["balanced_accuracy"] - ref["balanced_accuracy"], abs=1e-6)
    # The balanced decision (each model corrected by its own training prior) gets its column and its difference.
    balanced = {row: json.loads((out / "evals" / f"cls-{row}" / "metrics.json").read_text())["prior_corrected"]
                for row in ("original_only", "tdbn")}
    for row, block in balanced.items():
        assert results.loc[row, "prior_corrected_balanced_accuracy"] == pytest.approx(block["balanced_accuracy"])
    diff = tdbn["paired"]["prior_corrected"]["balanced_accuracy"]
    assert diff["difference"] == pytest.approx(balanced["tdbn"]["balanced_accuracy"]
                                               - balanced["original_only"]["balanced_accuracy"], abs=1e-9)
    assert results.loc["tdbn", "prior_corrected_balanced_accuracy_vs_ref"] == pytest.approx(diff["difference"])
    # The TDBN read segmented images made by the Table 1 Deep-UNet of this same run.
    config = json.loads((out / "runs" / "cls-tdbn" / "config.json").read_text())
    assert config["seg_dir"] == str(out / "segdir") and (out / "segdir" / "segmented").is_dir()
    # Every row read its inputs from a cache under OUT/cache, each set decoded once: the Table 1 pairs, the
    # HAM10000 originals, and the originals with their segmented twins for the rows that read both.
    caches = {"seg-deep_unet": "isic2018-32", "cls-original_only": "ham10000-32", "cls-tdbn": "ham10000-32-segmented"}
    for run, cache in caches.items():
        assert json.loads((out / "runs" / run / "config.json").read_text())["cache"] == str(out / "cache" / cache)
    manifests = {c: json.loads((out / "cache" / c / "manifest.json").read_text()) for c in caches.values()}
    assert manifests["isic2018-32"]["arrays"] == {"images": [12, 32, 32, 3], "masks": [12, 32, 32, 1]}
    assert manifests["ham10000-32"]["arrays"] == {"images": [28, 32, 32, 3]}
    assert set(manifests["ham10000-32-segmented"]["arrays"]) == {"images", "segmented"}
    md = (out / "results.md").read_text()
    assert "| Deep-UNet (Ours) | 91.17 |" in md and "| Dual-Network (With Metadata) | 93.47 |" in md
    assert "mobilenetv2, 32 px, 1 ep, weights none" in md and "ph2 melanoma AUC" in md
    assert "balanced decision: balanced acc" in md


def test_rerun_keeps_finished_rows_and_more_epochs_resume_them(reproduced):
    out, args, _ = reproduced
    stamp = (out / "runs" / "cls-tdbn" / "best.keras").stat().st_mtime
    cache_stamp = (out / "cache" / "isic2018-32" / "manifest.json").stat().st_mtime_ns
    # Without the cache the rows are the same rows (the cache holds the pixels the files decode to): all kept.
    again = invoke(*args, "--no-cache")
    assert again.exit_code == 0, again.output
    results = pd.read_csv(out / "results.csv").set_index("row")
    assert set(results.training) == {"kept"}
    assert (out / "runs" / "cls-tdbn" / "best.keras").stat().st_mtime == stamp
    # With it, finished rows read nothing: no cache is prepared or rewritten, even after one was removed.
    shutil.rmtree(out / "cache" / "ham10000-32")
    assert invoke(*args).exit_code == 0
    assert not (out / "cache" / "ham10000-32").exists()
    # A larger --epochs continues the segmentation row from its last epoch instead of starting over.
    more = [a if a != 1 else 2 for a in args]
    more[more.index("--rows") + 1] = "deep_unet"
    assert invoke(*more[:more.index("--external")], "--out", out).exit_code == 0
    history = pd.read_csv(out / "runs" / "seg-deep_unet" / "history.csv")
    assert list(history.epoch) == [1, 2]
    # ...reading the cache the first run made, not a new one.
    assert (out / "cache" / "isic2018-32" / "manifest.json").stat().st_mtime_ns == cache_stamp
    assert pd.read_csv(out / "results.csv").set_index("row").loc["deep_unet", "training"] == "resumed"
    # Other settings for a finished row's folder: that row fails in one line (recorded), the command exits 1.
    other = [*more[:more.index("--external")], "--out", out]
    other[other.index("--image-size") + 1] = 64
    result = invoke(*other)
    assert result.exit_code == 1 and "FAILED table1 deep_unet" in result.output
    row = pd.read_csv(out / "results.csv").set_index("row").loc["deep_unet"]
    assert row.status == "failed" and "image_size=32" in row.error and "image_size=64" in row.error
    assert "FAILED" in (out / "results.md").read_text() and (out / "errors.log").is_file()


def test_bad_settings_fail_before_any_run(tmp_path):
    result = invoke("reproduce", "table2", "--data-dir", tmp_path, "--rows", "xception", "--image-size", 32,
                    "--out", tmp_path / "r")
    assert result.exit_code != 0 and "table2 row xception" in result.output and "71" in result.output
    # --weights applies to every row, as on the training commands; a missing file fails before any run.
    result = invoke("reproduce", "table3", "--data-dir", tmp_path, "--seg-dir", tmp_path, "--weights",
                    tmp_path / "missing.pth", "--out", tmp_path / "r")
    assert result.exit_code != 0 and "Weights file not found" in result.output and "missing.pth" in result.output
    result = invoke("reproduce", "table4", "--out", tmp_path / "r")
    assert result.exit_code != 0 and "Unknown table table4" in result.output
    result = invoke("reproduce", "table3", "--data-dir", tmp_path, "--out", tmp_path / "r")
    assert result.exit_code != 0 and "--seg-data-dir" in result.output
    assert not (tmp_path / "r").exists()
