"""`gradcam` and `predict` end to end on synthetic HAM10000 (a TDBN and an original-only baseline, one epoch each)."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli

SMALL = ["--encoder", "mobilenetv2", "--weights", "none", "--image-size", "64", "--batch-size", "16", "--epochs", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Synthetic HAM10000, its SEGDIR (original x ground-truth mask), a TDBN run, a baseline run, a seg model."""
    import keras

    from skinkeras.data.ham10000 import MASK_FOLDER, ground_truth_segdir
    from skinkeras.data.synthetic import make_synthetic
    from skinkeras.models.contract import export_model
    from skinkeras.models.deep_unet import build_deep_unet

    root = tmp_path_factory.mktemp("explain")
    data = make_synthetic(root, n=80, seed=2, image_size=(96, 72), datasets=("ham10000",))["ham10000"]
    ground_truth_segdir(data, root / "seg")
    tdbn, baseline = root / "tdbn", root / "orig"
    ok("cls-train", "--data-dir", data, "--seg-dir", root / "seg", "--out", tdbn, *SMALL)
    ok("cls-train", "--data-dir", data, "--variant", "original_only", "--out", baseline, *SMALL)
    keras.utils.set_random_seed(0)
    seg_model = export_model(build_deep_unet(image_size=64, encoder="mobilenetv2",
                                                         weights=None, decoder_filters=(16, 8, 8, 8, 8),
                                                         aspp_filters=8))
    seg_model.save(root / "seg.keras")
    return {"data": Path(data), "tdbn": tdbn, "baseline": baseline, "seg_model": root / "seg.keras",
            "masks": os.path.join(data, MASK_FOLDER)}


def test_gradcam_writes_figure_maps_and_measures(runs, tmp_path):
    out = tmp_path / "cam"
    text = ok("gradcam", "--model", runs["tdbn"] / "best.keras", "--baseline", runs["baseline"] / "best.keras",
              "--n", 4, "--out", out)
    assert "Masks: ground truth (HAM10000 lesion masks" in text
    for name in ("figure7.png", "cams.npz", "cam_metrics.json", "per_image.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "cam_metrics.json").read_text())
    assert metrics["mask_source"].startswith("ground truth") and metrics["images_with_mask"] == 4
    assert set(metrics["models"]) == {"model", "baseline"}
    assert set(metrics["models"]["model"]["branches"]) == {"original", "segmented"}
    assert set(metrics["models"]["baseline"]["branches"]) == {"original"}
    original = metrics["models"]["model"]["branches"]["original"]
    assert original["images_measured"] == 4 and 0.0 <= original["mass_in_lesion"] <= 1.0
    assert original["pointing_game"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # The TDBN's segmented branch is only the attention keys: Grad-CAM is degenerate there, and says so.
    assert metrics["models"]["model"]["branches"]["segmented"]["degenerate_maps"] == 4
    assert "layercam" in metrics["models"]["model"]["branches"]["segmented"]["note"]

    per_image = pd.read_csv(out / "per_image.csv")
    split = pd.read_csv(runs["tdbn"] / "split.csv")
    assert set(per_image.image_id) <= set(split[split.subset == "test"].image_id)
    cams = np.load(out / "cams.npz")
    assert len(cams.files) == 4 * 3  # 4 images x (two TDBN branches + one baseline branch)
    first = per_image.image_id[0]
    cam = cams[f"model/{first}/original"]
    assert cam.shape == (64, 64) and cam.min() >= 0 and cam.max() <= 1
    # The stored map is the one the measures used.
    from skinkeras.explain.gradcam import cam_mass_in_mask

    mask = Image.open(os.path.join(runs["masks"], f"{first}_segmentation.png")).resize((64, 64), Image.NEAREST)
    assert cam_mass_in_mask(cam, np.asarray(mask) > 127) == pytest.approx(per_image.model_original_mass_in_lesion[0],
                                                                         abs=1e-6, nan_ok=True)
    assert len(os.listdir(out / "overlays")) == 4 * 3


def test_gradcam_on_a_folder_with_a_named_class_and_layercam(runs, tmp_path):
    out = tmp_path / "cam"
    folder = os.path.join(runs["data"], "HAM10000_images_part_1")
    ok("gradcam", "--model", runs["baseline"] / "best.keras", "--images", folder, "--n", 3, "--class", "MEL",
       "--method", "layercam", "--layer", "block_13_expand_relu", "--masks", runs["masks"], "--out", out)
    per_image = pd.read_csv(out / "per_image.csv")
    assert (per_image.model_explained == "mel").all()
    metrics = json.loads((out / "cam_metrics.json").read_text())
    branch = metrics["models"]["model"]["branches"]["original"]
    assert branch["layer"] == "original_encoder/block_13_expand_relu" and branch["images_measured"] == 3
    assert np.load(out / "cams.npz")[f"model/{per_image.image_id[0]}/original"].shape == (64, 64)


def test_gradcam_errors_are_one_line(runs, tmp_path):
    result = invoke("gradcam", "--model", runs["tdbn"] / "best.keras", "--class", "melanoma", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "Unknown --class 'melanoma'; valid: akiec, bcc" in result.output
    result = invoke("gradcam", "--model", runs["tdbn"] / "best.keras", "--layer", "nope", "--out", tmp_path / "y")
    assert result.exit_code != 0 and "No layer 'nope'" in result.output
    assert "Traceback" not in result.output


def test_predict_runs_the_whole_pipeline_on_one_image(runs, tmp_path):
    image = next(p for p in sorted((runs["data"] / "HAM10000_images_part_1").iterdir()))
    big = tmp_path / "big.png"  # any size, any format
    Image.open(image).resize((301, 207)).save(big)
    out = tmp_path / "pred"
    text = first = ok("predict", big, "--seg-model", runs["seg_model"], "--cls-model", runs["tdbn"] / "best.keras",
                      "--age", 55, "--sex", "male", "--site", "back", "--out", out)
    lines = [line.split() for line in text.splitlines() if len(line.split()) == 2]
    probs = [float(p) for _, p in lines[:7]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-3)
    report = json.loads((out / "prediction.json").read_text())
    assert report["metadata_available"] and report["predicted"] == lines[0][0]
    mask = np.asarray(Image.open(out / "big_segmentation.png"))
    assert mask.shape == (207, 301) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(out / "big_segmented.jpg").size == (301, 207)
    assert Image.open(out / "big_cam.png").size == (64 * 4, 64)  # image, mask, two branch CAMs

    text = ok("predict", big, "--seg-model", runs["seg_model"], "--cls-model", runs["tdbn"] / "best.keras")
    assert "metadata branch was masked out" in text
    # cls-train calibrated the run: the probabilities are temperature-scaled, and the referral says its source
    assert "calibrated probabilities: temperature" in report["calibration"]
    referral = report["referral"]
    assert referral["confidence"] == pytest.approx(max(report["probabilities"].values()))
    if referral["threshold"] is None:
        assert "no referral threshold" in first and not referral["refer"]
    else:
        assert referral["refer"] == (referral["confidence"] < referral["threshold"])
        assert ("refer to a clinician" in first) == referral["refer"]
        assert "val images" in referral["source"]
    flipped = ok("predict", big, "--seg-model", runs["seg_model"], "--cls-model", runs["tdbn"] / "best.keras",
                 "--tta", "flip-rotate", "--no-calibration", "--out", tmp_path / "tta")
    tta = json.loads((tmp_path / "tta" / "prediction.json").read_text())
    assert tta["tta"]["mode"] == "flip-rotate" and tta["tta"]["spread"] >= 0
    assert "raw probabilities (--no-calibration)" in flipped
    assert sum(tta["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_errors_are_one_line(runs, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    for args, message in (
        ((bad,), "bad.jpg"),
        ((runs["data"] / "HAM10000_images_part_1" / os.listdir(runs["data"] / "HAM10000_images_part_1")[0],
          "--site", "elbow"), "valid"),
        ((runs["data"] / "HAM10000_images_part_1" / os.listdir(runs["data"] / "HAM10000_images_part_1")[0],
          "--sex", "x"), "valid"),
    ):
        result = invoke("predict", *args, "--seg-model", runs["seg_model"], "--cls-model", runs["tdbn"] / "best.keras")
        assert result.exit_code != 0, args
        assert message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
