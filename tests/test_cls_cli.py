"""Classification end to end on synthetic HAM10000 (torch-speed core tests): cls-train, cls-eval, the scorer."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli

SMALL = ["--encoder", "mobilenetv2", "--weights", "none", "--image-size", "64", "--batch-size", "16"]


def ok(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """Synthetic HAM10000 plus a SEGDIR of original x ground-truth mask, as `segment` would write it."""
    from skinkeras.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("ham")
    data = make_synthetic(root, n=160, seed=1, image_size=(96, 72), datasets=("ham10000",))["ham10000"]
    seg = root / "seg" / "segmented"
    seg.mkdir(parents=True)
    masks = os.path.join(data, "HAM10000_segmentations_lesion_tschandl")
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        for name in os.listdir(os.path.join(data, part)):
            image = np.asarray(Image.open(os.path.join(data, part, name)).convert("RGB"))
            mask = np.asarray(Image.open(os.path.join(masks, name.replace(".jpg", "_segmentation.png")))) > 128
            Image.fromarray(image * mask[..., None].astype(np.uint8)).save(seg / name, quality=95)
    return {"data": data, "seg": root / "seg"}


@pytest.fixture(scope="module")
def tdbn_run(ham, tmp_path_factory):
    run = tmp_path_factory.mktemp("cls") / "tdbn"
    ok("cls-train", "--data-dir", ham["data"], "--seg-dir", ham["seg"], "--epochs", 5, "--lr", "2e-3",
       "--out", run, *SMALL)
    return run


def test_run_folder_and_lesion_grouped_split(tdbn_run):
    for name in ("config.json", "env.json", "classes.json", "metadata_encoder.json", "split.csv", "best.keras",
                 "last.keras", "history.csv", "class_distribution.png", "training_curves.png", "metrics.json"):
        assert (tdbn_run / name).is_file(), name
    split = pd.read_csv(tdbn_run / "split.csv")
    sides = split.groupby("lesion_id").subset.nunique()
    assert (sides == 1).all(), "a lesion has images on two sides of the split"
    for subset in ("train", "val", "test"):
        assert split[split.subset == subset].dx.nunique() == 7, subset


def test_tdbn_fits_the_training_set(tdbn_run):
    # Generalising to unseen lesions needs more data than a test can train on here (validation balanced
    # accuracy stays near chance with ~110 training images); fitting the training images shows the whole
    # path (both encoders, cross-attention, metadata, fusion, balancing) learns. Chance is 1/7 = 0.143.
    history = pd.read_csv(tdbn_run / "history.csv")
    assert history.loss.iloc[-1] < 0.8 * history.loss.iloc[0]
    assert history.balanced_accuracy.iloc[-1] > 0.4, history.balanced_accuracy.tolist()
    metrics = json.loads((tdbn_run / "metrics.json").read_text())
    assert set(metrics["val"]) >= {"accuracy", "balanced_accuracy", "auc_macro", "top2_accuracy", "per_class"}


def test_cls_eval_matches_the_official_scorer(tdbn_run, tmp_path):
    scoring = pytest.importorskip("isic_challenge_scoring.classification")
    out = tmp_path / "eval"
    ok("cls-eval", "--model", tdbn_run / "best.keras", "--out", out)
    for name in ("metrics.json", "predictions.csv", "ground_truth.csv", "confusion_matrix.png", "roc.png"):
        assert (out / name).is_file(), name
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    np.testing.assert_allclose(predictions.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)
    split = pd.read_csv(tdbn_run / "split.csv")
    assert set(predictions.image) == set(split[split.subset == "test"].image_id)
    ours = json.loads((out / "metrics.json").read_text())
    assert set(ours) >= {"accuracy", "balanced_accuracy", "auc_macro", "top2_accuracy", "per_class"}
    official = scoring.ClassificationScore.from_file(out / "ground_truth.csv", out / "predictions.csv",
                                                     scoring.ClassificationMetric.BALANCED_ACCURACY)
    assert ours["balanced_accuracy"] == pytest.approx(float(official.aggregate["balanced_accuracy"]), abs=1e-9)
    names = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
    for column, ours_name in names.items():
        assert ours["per_class"][ours_name]["auc"] == pytest.approx(float(official.per_category.loc[column, "auc"])
                                                                    if column in official.per_category.index else
                                                                    float(official.per_category["auc"][column]),
                                                                    abs=1e-9), column


def test_baseline_and_ablation_take_only_their_inputs(ham, tmp_path):
    run = tmp_path / "orig"
    ok("cls-train", "--data-dir", ham["data"], "--variant", "original_only", "--epochs", 1, "--limit", 60,
       "--out", run, *SMALL)
    assert (run / "best.keras").is_file()
    assert json.loads((run / "config.json").read_text())["variant"] == "original_only"
    run = tmp_path / "mobilenet"
    output = ok("cls-train", "--data-dir", ham["data"], "--arch", "mobilenetv2", "--epochs", 1, "--limit", 60,
                "--split", "image", "--out", run, *SMALL)
    assert "Run folder" in output
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == "mobilenetv2" and config["split"] == "image"


def test_missing_segmented_images_name_the_segment_command(ham, tmp_path):
    result = CliRunner().invoke(cli, ["cls-train", "--data-dir", str(ham["data"]), "--seg-dir", str(tmp_path),
                                      "--out", str(tmp_path / "run"), *SMALL])
    assert result.exit_code != 0
    assert "cli.py segment" in result.output and "Error:" in result.output
    result = CliRunner().invoke(cli, ["cls-train", "--data-dir", str(ham["data"]), "--out", str(tmp_path / "r2"),
                                      *SMALL])
    assert result.exit_code != 0 and "--seg-dir" in result.output
