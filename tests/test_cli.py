"""The CLI end to end on synthetic data: run folders, resume, ISIC-format outputs, the scorer, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from conftest import ROOT
from skinkeras.data.isic2018 import OFFICIAL_FOLDERS
from skinkeras.data.masks import read_mask
from skinkeras.metrics import SEG_METRICS

TINY = ["--encoder", "mobilenetv2", "--weights", "none", "--image-size", "64", "--batch-size", "4", "--lr", "2e-3"]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def error_line(*args):
    result = invoke(*args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    """A tiny seg-train run on the synthetic ISIC 2018 set, shared by the tests of this module."""
    run = tmp_path_factory.mktemp("cli") / "run"
    ok("seg-train", "--data-dir", synthetic["isic2018"], "--limit", 16, "--epochs", 2, "--out", run, *TINY)
    return run


def test_run_folder_records_everything(trained):
    for name in ("config.json", "env.json", "split.csv", "best.keras", "last.keras", "history.csv", "metrics.json",
                 "training_curves.png"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["encoder"] == "mobilenetv2" and config["epochs"] == 2 and config["arch"] == "deep_unet"
    assert config["aux_weights"] == [0.2, 0.1] and config["out"] == str(trained)
    env = json.loads((trained / "env.json").read_text())
    assert env["backend"] and env["seed"] == 0 and env["git_commit"]
    split = pd.read_csv(trained / "split.csv")
    assert len(split) == 16 and set(split.subset) == {"train", "val"}
    assert not set(split[split.subset == "train"].image_id) & set(split[split.subset == "val"].image_id)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics["val"]) == set(SEG_METRICS) and metrics["params"] > 0 and metrics["size_mb"] > 0


def test_resume_continues_and_refuses_to_overwrite(synthetic, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    config["out"] = str(run)
    (run / "config.json").write_text(json.dumps(config))
    line = error_line("seg-train", "--data-dir", synthetic["isic2018"], "--out", run, *TINY)
    assert "--resume" in line
    ok("seg-train", "--resume", "--out", run, "--epochs", 3)
    history = pd.read_csv(run / "history.csv")
    assert list(history.epoch) == [1, 2, 3]
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3


def test_seg_eval_writes_isic_masks_that_the_official_scorer_agrees_with(synthetic, trained, tmp_path):
    scoring = pytest.importorskip("isic_challenge_scoring.segmentation")
    out = tmp_path / "eval"
    ok("seg-eval", "--model", trained / "best.keras", "--data-dir", synthetic["isic2018"], "--subset", "val",
       "--out", out)
    truth_dir = synthetic["isic2018"] / OFFICIAL_FOLDERS["val"][1]
    truths = sorted(os.listdir(truth_dir))
    assert sorted(os.listdir(out / "masks")) == truths
    for name in truths:
        pred = Image.open(out / "masks" / name)
        assert pred.mode == "L" and pred.size == Image.open(truth_dir / name).size
        assert set(np.unique(np.asarray(pred))) <= {0, 255}
    ours = json.loads((out / "metrics.json").read_text())
    official = scoring.SegmentationScore.from_dir(truth_dir, out / "masks").macro_average
    for key in SEG_METRICS:
        assert ours[key] == pytest.approx(float(official[key]), abs=1e-6), key
    assert len(pd.read_csv(out / "per_image.csv")) == len(truths)

    # The same folders scored without a model give the same numbers.
    again = tmp_path / "folders"
    ok("seg-eval", "--truth-dir", truth_dir, "--pred-dir", out / "masks", "--out", again)
    folder_metrics = json.loads((again / "metrics.json").read_text())
    for key in SEG_METRICS:
        assert folder_metrics[key] == pytest.approx(ours[key], abs=1e-9)


def test_segment_writes_masked_images_skips_done_and_bad_files(synthetic, trained, tmp_path):
    images = tmp_path / "images"
    source = synthetic["ham10000"] / "HAM10000_images_part_1"
    shutil.copytree(source, images)
    names = sorted(os.listdir(images))[:6]
    for extra in sorted(os.listdir(images))[6:]:
        os.remove(images / extra)
    (images / names[0]).write_bytes((images / names[0]).read_bytes()[:200])  # truncated JPEG
    out = tmp_path / "seg"
    ok("segment", "--model", trained / "best.keras", "--images", images, "--out", out)
    report = json.loads((out / "segment.json").read_text())
    assert (report["written"], report["skipped"]) == (5, 1)
    skipped = pd.read_csv(out / "skipped.csv")
    assert names[0] in skipped.path.iloc[0]
    stem = names[1].rsplit(".", 1)[0]
    image = np.asarray(Image.open(images / names[1]).convert("RGB")).astype(int)
    segmented = np.asarray(Image.open(out / "segmented" / f"{stem}.jpg")).astype(int)
    mask = read_mask(out / "masks" / f"{stem}_segmentation.png")
    assert segmented.shape == image.shape and mask.shape == image.shape[:2]
    # Outside the lesion mask the segmented image is black; inside, it is the original (JPEG-close).
    if (~mask).any():
        assert segmented[~mask].mean() < 8
    if mask.sum() > 50:
        assert np.abs(segmented[mask] - image[mask]).mean() < 12
    output = ok("segment", "--model", trained / "best.keras", "--images", images, "--out", out)
    assert "0 written" in output and "5 already there" in output


def test_unknown_names_list_the_valid_choices(synthetic, tmp_path):
    line = error_line("seg-train", "--data-dir", synthetic["isic2018"], "--arch", "segformer", "--out", tmp_path / "a")
    assert "deep_unet, unet, unetpp, deeplabv3plus" in line
    line = error_line("seg-train", "--data-dir", synthetic["isic2018"], "--encoder", "vgg", "--out", tmp_path / "b")
    assert "efficientnetb3" in line and "densenet201" in line


def test_unknown_backend_is_one_line(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="mxnet")
    proc = subprocess.run([sys.executable, "cli.py", "seg-train", "--images", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["Error: Unknown KERAS_BACKEND='mxnet'; valid: jax, tensorflow, torch"]


def test_bad_folders_give_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "No images" in error_line("seg-train", "--images", tmp_path / "empty", "--masks", tmp_path / "empty",
                                     "--out", tmp_path / "r1")
    assert "--data-dir" in error_line("seg-train", "--out", tmp_path / "r2")
    assert "ISIC2018_Task1-2_Training_Input" in error_line("seg-train", "--data-dir", tmp_path / "empty",
                                                           "--out", tmp_path / "r3")
    assert "Model file not found" in error_line("seg-eval", "--model", tmp_path / "none.keras", "--images",
                                                tmp_path / "empty", "--masks", tmp_path / "empty",
                                                "--out", tmp_path / "e")


def test_training_skips_bad_pairs_and_lists_them(synthetic, tmp_path):
    data = tmp_path / "data"
    images, masks = (data / f for f in OFFICIAL_FOLDERS["train"])
    shutil.copytree(synthetic["isic2018"] / OFFICIAL_FOLDERS["train"][0], images)
    shutil.copytree(synthetic["isic2018"] / OFFICIAL_FOLDERS["train"][1], masks)
    ids = sorted(p.rsplit(".", 1)[0] for p in os.listdir(images))[:8]
    for name in os.listdir(images):
        if name.rsplit(".", 1)[0] not in ids:
            os.remove(images / name)
    os.remove(masks / f"{ids[0]}_segmentation.png")  # missing mask
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / f"{ids[1]}_segmentation.png")  # wrong size
    (images / f"{ids[2]}.jpg").write_bytes(b"not a jpeg")  # unreadable
    gray = np.asarray(Image.open(images / f"{ids[3]}.jpg").convert("L"))
    Image.fromarray(gray).save(images / f"{ids[3]}.jpg")  # grayscale is fine
    run = tmp_path / "run"
    ok("seg-train", "--data-dir", data, "--epochs", 1, "--out", run, *TINY)
    skipped = pd.read_csv(run / "skipped.csv")
    listed = " ".join(skipped.path) + " " + " ".join(skipped.reason)
    assert all(i in listed for i in ids[:3]) and ids[3] not in listed
    assert len(skipped) == 3
    assert (run / "best.keras").is_file()


def test_seg_otsu_then_score(synthetic, tmp_path):
    images = synthetic["isic2018"] / OFFICIAL_FOLDERS["val"][0]
    ok("seg-otsu", "--images", images, "--out", tmp_path / "otsu")
    output = ok("seg-eval", "--truth-dir", synthetic["isic2018"] / OFFICIAL_FOLDERS["val"][1],
                "--pred-dir", tmp_path / "otsu" / "masks", "--out", tmp_path / "scored")
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["dice"] > 0.5
    assert "dice=" in output


def test_one_output_baseline_trains_on_the_same_monitor(synthetic, tmp_path):
    # A baseline has no auxiliary outputs, and Keras then logs its metrics without the output name; the run
    # must still monitor (and checkpoint on) the validation Dice of the mask.
    run = tmp_path / "unet"
    ok("seg-train", "--data-dir", synthetic["isic2018"], "--arch", "unet", "--limit", 8, "--epochs", 1, "--out", run,
       *TINY[:4], "--image-size", "32", "--batch-size", "4")
    history = pd.read_csv(run / "history.csv")
    assert {"mask_dice", "val_mask_dice", "val_mask_jaccard"} <= set(history.columns)
    assert (run / "best.keras").is_file() and set(json.loads((run / "metrics.json").read_text())["val"]) == set(
        SEG_METRICS)
