"""Fault injection: bad options, files, CSVs, TOMLs, model files and run folders through the real CLI.

Each case generates its own bad input, runs the click CLI in-process at tiny
sizes and asserts the exit code, one `Error:` line naming the problem, no
traceback, and what the run folder holds afterwards.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from skinkeras import runs
from skinkeras.data.ham10000 import read_ham10000_table
from skinkeras.data.masks import read_mask, write_mask
from skinkeras.data.metadata import MetadataEncoder
from skinkeras.data.pipeline import load_pairs

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "fixtures" / "legacy"
TINY = ["--encoder", "mobilenetv2", "--weights", "none", "--image-size", "32", "--batch-size", "4", "--epochs", "1"]


def fails(*args):
    """Runs the CLI; asserts it failed with exactly one `Error:` line and no traceback; returns that line."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    # (a progress bar may end without a newline, so the error can share its line)
    lines = ["Error:" + line.split("Error:", 1)[1] for line in result.output.splitlines() if "Error:" in line]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def tiny_isic(tmp_path_factory):
    """Eight image/mask pairs in the plain images/ + masks/ layout."""
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"ISIC_000000{i}.jpg")
        write_mask(root / "masks" / f"ISIC_000000{i}_segmentation.png", rng.random((40, 48)) > 0.5)
    return root


@pytest.mark.parametrize("options, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--image-size", "0"], "--image-size must be at least 32"),
    (["--image-size", "-1"], "--image-size must be at least 32"),
    (["--image-size", "7"], "--image-size must be at least 32"),
    (["--image-size", "48"], "--image-size must be a multiple of 32"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--limit", "-1"], "--limit must be at least 1"),
    (["--lr", "-1"], "--learning-rate must be in (0, 1]"),
    (["--arch", "segformer"], "Unknown segmentation model 'segformer'; valid: deep_unet"),
    (["--encoder", "xception"], "no stride-aligned skips"),
    (["--weights", "missing.h5"], "Weights file not found"),
])
def test_bad_options_stop_before_any_work(tiny_isic, tmp_path, options, message):
    out = tmp_path / "run"
    args = ["seg-train", "--images", tiny_isic / "images", "--masks", tiny_isic / "masks", "--out", out, *TINY]
    line = fails(*args, *options)
    assert message in line
    assert not out.exists()  # nothing was written: the config was refused before the run folder


@pytest.mark.parametrize("toml, message", [
    ('image_size = "sixty-four"', "image_size must be int (got 'sixty-four')"),
    ("epochs = 1.5", "epochs must be int (got 1.5)"),
    ('limit = "8"', "limit must be int or none (got '8')"),
    ('batch_size = "4"', "batch_size must be int (got '4')"),
    ("image_sise = 64", "unknown keys image_sise"),
    ("image_size = [", "not valid TOML"),
])
def test_bad_toml_values_name_the_file_and_key(tiny_isic, tmp_path, toml, message):
    config = tmp_path / "exp.toml"
    config.write_text(toml + "\n")
    line = fails("seg-train", "--images", tiny_isic / "images", "--masks", tiny_isic / "masks", "--config", config,
                 "--out", tmp_path / "run")
    assert str(config) in line and message in line
    assert not (tmp_path / "run").exists()


def damaged_weights(path, out):
    """A copy of a .keras file whose zip directory is intact but whose weights member is corrupt (bad CRC)."""
    shutil.copy(path, out)
    with zipfile.ZipFile(out) as archive:
        info = archive.getinfo("model.weights.h5")
    with open(out, "r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2)
        f.write(b"\x00" * 64)
    return out


@pytest.mark.parametrize("kind", ["truncated", "random", "damaged_weights", "text"])
def test_unreadable_model_files_say_so(tiny_isic, tmp_path, kind):
    path = tmp_path / "bad.keras"
    good = (LEGACY / "legacy_seg.keras").read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("not a model\n")
    else:
        damaged_weights(LEGACY / "legacy_seg.keras", path)
    line = fails("seg-eval", "--model", path, "--images", tiny_isic / "images", "--masks", tiny_isic / "masks",
                 "--out", tmp_path / "eval")
    assert f"cannot read model file {path}: not a valid .keras archive (damaged or truncated)" in line
    assert "not found" not in line


def test_model_of_the_wrong_kind_says_what_it_is(tiny_isic, tmp_path):
    image = tiny_isic / "images" / "ISIC_0000000.jpg"
    line = fails("predict", image, "--seg-model", LEGACY / "legacy_seg.keras", "--cls-model",
                 LEGACY / "legacy_seg.keras")
    assert "is a segmentation model" in line and "needs a classification model" in line and "--layer" not in line
    line = fails("seg-eval", "--model", LEGACY / "legacy_tdbn.keras", "--images", tiny_isic / "images", "--masks",
                 tiny_isic / "masks", "--out", tmp_path / "eval")
    assert "is a classification model" in line and "needs a segmentation model" in line


def test_predict_refuses_an_implausible_age(tiny_isic):
    line = fails("predict", tiny_isic / "images" / "ISIC_0000000.jpg", "--seg-model", LEGACY / "legacy_seg.keras",
                 "--cls-model", LEGACY / "legacy_tdbn.keras", "--age", "300")
    assert "--age must be in [0, 120] (got 300.0)" in line


def test_header_only_metadata_csv_says_no_records(tmp_path):
    data = tmp_path / "ham"
    (data / "HAM10000_images").mkdir(parents=True)
    (data / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    (tmp_path / "seg" / "segmented").mkdir(parents=True)
    line = fails("cls-train", "--data-dir", data, "--seg-dir", tmp_path / "seg", "--out", tmp_path / "run", *TINY)
    assert "No usable ham10000 records" in line and "segmented" not in line


def test_bad_metadata_values_are_missing_and_listed_not_fatal(tmp_path):
    csv = tmp_path / "HAM10000_metadata.csv"
    pd.DataFrame({"lesion_id": ["L1", "L2", "L3", "L4", "L5"], "image_id": [f"ISIC_000000{i}" for i in range(5)],
                  "dx": ["nv", "mel", "bcc", "nv", "df"], "dx_type": "histo",
                  "age": ["45", "-5", "300", "abc", "60"], "sex": ["male", "other", "female", "", "female"],
                  "localization": ["back", "face", "elbow", "trunk", "scalp"]}).to_csv(csv, index=False)
    df, problems = read_ham10000_table(csv)
    assert len(df) == 5  # every image is kept
    assert np.isnan(df.age.iloc[1]) and np.isnan(df.age.iloc[2]) and np.isnan(df.age.iloc[3])
    assert df.sex.iloc[1] == "" and df.site.iloc[2] == ""
    reasons = dict(problems)
    assert "age -5 outside 0-120" in reasons["ISIC_0000001"] or "sex 'other'" in reasons["ISIC_0000001"]
    assert sum("treated as missing" in r for _, r in problems) == 4  # -5, 300, 'other', 'elbow' ('abc': not a number)
    encoder = MetadataEncoder().fit(df)
    assert encoder.age_mean == pytest.approx(52.5)  # only the plausible ages 45 and 60


def test_decompression_bomb_mask_is_skipped_and_listed(tiny_isic, tmp_path, monkeypatch):
    from skinkeras.data.isic2018 import find_pairs

    folder = tmp_path / "masks"
    shutil.copytree(tiny_isic / "masks", folder)
    bomb = folder / "ISIC_0000003_segmentation.png"
    Image.new("L", (48 * 40, 40)).save(bomb)  # small on disk, many pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 48 * 10)  # so that it counts as a bomb here
    with pytest.raises(ValueError, match="cannot decode image"):
        read_mask(bomb)
    pairs, _ = find_pairs(None, str(tiny_isic / "images"), str(folder))
    images, masks, kept, skipped = load_pairs(pairs, (32, 32), progress=False)
    assert len(kept) == 7 and "ISIC_0000003" in skipped[0][0] and "ISIC_0000003_segmentation.png" in skipped[0][1]


def test_finished_run_folder_is_never_overwritten_without_a_flag(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"finished work")
    with pytest.raises(FileExistsError, match="--resume to continue it, --overwrite to replace it"):
        runs.prepare_run_dir(str(run), "seg-train")
    assert (run / "best.keras").read_bytes() == b"finished work"
    runs.prepare_run_dir(str(run), "seg-train", overwrite=True)
    assert not (run / "best.keras").exists()


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file = run / runs.LOCK_FILE
        run.mkdir()
        import json
        import socket

        lock_file.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "now"}))
        with pytest.raises(runs.RunLockedError, match=f"in use by process {holder.pid}"):
            runs.RunLock(str(run)).acquire()
        # the same refusal through the CLI, before anything is read
        line = fails("seg-train", "--images", tmp_path, "--masks", tmp_path, "--out", run, *TINY)
        assert f"in use by process {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()
    with runs.RunLock(str(run)) as lock:  # the holder is gone: its lock is stale
        assert lock.held and json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()


def test_resume_appends_its_environment(tmp_path):
    runs.record_environment(str(tmp_path), {"command": "first"})
    runs.record_environment(str(tmp_path), {"command": "second"}, resume=True)
    env = runs.read_json(str(tmp_path / "env.json"))
    assert env["command"] == "first" and [e["command"] for e in env["resumes"]] == ["second"]


def test_a_failed_save_leaves_no_temporary_file_and_a_full_disk_says_so(tmp_path, monkeypatch):
    import keras

    from skinkeras.training import save_atomic

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    target = tmp_path / "last.keras"
    save_atomic(model, str(target))
    before = target.read_bytes()

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(keras.Model, "save", full)
    with pytest.raises(runs.DiskFullError, match=f"No space left on device writing {target}: it needs about"):
        save_atomic(model, str(target))
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]


def test_full_disk_stops_training_with_one_line(tiny_isic, tmp_path):
    """A real full disk: a 3 MB tmpfs cannot hold the first checkpoint (skipped where mount is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")
    try:
        out = mount / "run"
        line = fails("seg-train", "--images", tiny_isic / "images", "--masks", tiny_isic / "masks", "--out", out,
                     *TINY)
        assert "No space left on device" in line and str(out) in line
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp.keras")]
        assert not (out / runs.LOCK_FILE).exists()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_isic, tmp_path):
    """A seg-train killed (SIGKILL) in its second epoch, resumed: history equal to a run never interrupted."""
    import signal
    import time

    from skinkeras.config import SegTrainConfig
    from skinkeras.segmentation.train import train_segmentation

    small = dict(encoder="mobilenetv2", weights="none", image_size=32, batch_size=4, epochs=3)
    cfg = dict(images=str(tiny_isic / "images"), masks=str(tiny_isic / "masks"), decoder_filters=[16, 8, 8, 8, 8],
               aspp_filters=8, **small)
    whole = train_segmentation(SegTrainConfig(**cfg, out=str(tmp_path / "whole")), progress=False)

    killed = tmp_path / "killed"
    config = tmp_path / "small.toml"
    config.write_text("decoder_filters = [16, 8, 8, 8, 8]\naspp_filters = 8\n")
    args = [sys.executable, str(ROOT / "cli.py"), "seg-train", "--images", tiny_isic / "images", "--masks",
            tiny_isic / "masks", "--config", config, "--out", killed,
            *[str(v) for k, v in small.items() for v in (f"--{k.replace('_', '-')}", v)]]
    process = subprocess.Popen([str(a) for a in args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if (killed / "history.csv").exists() and len((killed / "history.csv").read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows = len(pd.read_csv(killed / "history.csv"))
    assert 1 <= rows < 3 and (killed / runs.LOCK_FILE).exists()  # killed mid-run, its lock left behind

    train_segmentation(SegTrainConfig(**cfg, out=str(killed)), resume=True, progress=False)  # takes the stale lock
    a = pd.read_csv(Path(whole) / "history.csv").drop(columns="seconds")
    b = pd.read_csv(killed / "history.csv").drop(columns="seconds")
    assert len(b) == 3 and list(b.epoch) == [1, 2, 3]
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-5, atol=1e-6)
    env = runs.read_json(str(killed / "env.json"))
    assert "seg-train" in env["command"] and len(env["resumes"]) == 1
    assert not (killed / runs.LOCK_FILE).exists()
