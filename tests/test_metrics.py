"""Numpy ISIC segmentation metrics: hand-computed values, mask I/O, and agreement with the official scorer."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinkeras.data.masks import read_mask, write_mask
from skinkeras.metrics import (
    SEG_METRICS,
    mean_scores,
    score_mask_folders,
    seg_confusion,
    seg_scores,
)

H, W = 48, 64  # non-square so a transposed mask cannot pass


def _bool(rows):
    return np.array(rows, dtype=bool)


def _ellipse(cy, cx, ry, rx, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _name(i):
    return f"ISIC_{i:07d}_segmentation.png"


@pytest.fixture
def scorer():
    return pytest.importorskip("isic_challenge_scoring")


# --- hand-computed per-image values -------------------------------------------------------------


def test_confusion_and_scores_by_hand():
    truth = _bool([[1, 1, 0, 0], [1, 1, 0, 0]])
    pred = _bool([[1, 0, 0, 0], [1, 1, 1, 0]])
    assert seg_confusion(truth, pred) == (3, 1, 1, 3)
    s = seg_scores(truth, pred)
    assert set(s) == set(SEG_METRICS)
    assert s["dice"] == pytest.approx(6 / 8)
    assert s["jaccard"] == pytest.approx(3 / 5)
    assert s["threshold_jaccard"] == 0.0  # 0.6 < 0.65
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["sensitivity"] == pytest.approx(3 / 4)
    assert s["specificity"] == pytest.approx(3 / 4)
    assert all(type(v) is float for v in s.values())


@pytest.mark.parametrize(
    "truth, pred, expected",
    [
        # values in SEG_METRICS order: dice, jaccard, threshold_jaccard, accuracy, sensitivity, specificity
        # both empty: every ratio with a zero denominator is a freebie 1.0
        ("empty", "empty", (1, 1, 1, 1, 1, 1)),
        # empty truth, some prediction: overlap 0 but sensitivity is a freebie
        ("empty", "half", (0, 0, 0, 0.5, 1, 0.5)),
        # empty prediction on a lesion
        ("half", "empty", (0, 0, 0, 0.5, 0, 1)),
        # prediction covers everything
        ("half", "full", (2 / 3, 0.5, 0, 0.5, 1, 0)),
        # truth covers everything: specificity is a freebie
        ("full", "full", (1, 1, 1, 1, 1, 1)),
        ("full", "empty", (0, 0, 0, 0, 0, 1)),
    ],
)
def test_edge_cases(truth, pred, expected):
    masks = {
        "empty": np.zeros((4, 4), bool),
        "full": np.ones((4, 4), bool),
        "half": np.repeat([[True, True, False, False]], 4, axis=0),
    }
    got = seg_scores(masks[truth], masks[pred])
    assert got == pytest.approx(dict(zip(SEG_METRICS, map(float, expected))))


def test_threshold_jaccard_boundary():
    truth = np.ones((10, 20), bool)  # 200 pixels
    exact = truth.copy().ravel()
    exact[130:] = False  # jaccard 130/200 == 0.65, kept (>=)
    below = truth.copy().ravel()
    below[129:] = False  # 0.645, dropped
    assert seg_scores(truth, exact.reshape(truth.shape))["threshold_jaccard"] == 0.65
    assert seg_scores(truth, below.reshape(truth.shape))["threshold_jaccard"] == 0.0
    assert seg_scores(truth, below.reshape(truth.shape))["jaccard"] == pytest.approx(0.645)


def test_uint8_binarised_above_128():
    truth = np.array([[0, 128, 129, 255]], np.uint8)
    assert seg_confusion(truth, np.array([[129, 129, 129, 129]], np.uint8)) == (2, 2, 0, 0)
    assert seg_confusion(truth, truth > 128) == (2, 0, 0, 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        seg_scores(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="threshold"):
        seg_scores(np.zeros((2, 2), bool), np.full((2, 2), 0.7))
    with pytest.raises(ValueError, match="empty"):
        seg_scores(np.zeros((0, 2), bool), np.zeros((0, 2), bool))


def test_mean_scores():
    a = seg_scores(np.ones((2, 2), bool), np.ones((2, 2), bool))
    b = seg_scores(np.ones((2, 2), bool), np.zeros((2, 2), bool))
    m = mean_scores([a, {**b, "image_id": "ISIC_0000001"}])
    assert m == {"dice": 0.5, "jaccard": 0.5, "threshold_jaccard": 0.5, "accuracy": 0.5,
                 "sensitivity": 0.5, "specificity": 1.0}
    assert all(type(v) is float for v in m.values())
    with pytest.raises(ValueError, match="no per-image"):
        mean_scores([])
    with pytest.raises(ValueError, match="lack"):
        mean_scores([{"dice": 1.0}])


# --- mask I/O -----------------------------------------------------------------------------------


def test_write_mask_round_trip(tmp_path):
    mask = _ellipse(20, 30, 10, 15)
    write_mask(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "L" and im.size == (W, H)
        assert set(np.unique(np.asarray(im))) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    write_mask(tmp_path / "c.png", mask[..., None].astype(np.float32))  # HxWx1 0/1 floats
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png"), mask)
    with pytest.raises(ValueError, match="threshold"):
        write_mask(tmp_path / "p.png", np.full((4, 4), 0.3))
    with pytest.raises(ValueError, match="not HxW"):
        write_mask(tmp_path / "p.png", np.zeros((2, 4, 4), bool))


def test_read_mask_8bit_threshold(tmp_path):
    Image.fromarray(np.array([[0, 127, 128, 129, 200, 255]], np.uint8)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png"), [[False, False, False, True, True, True]])


def test_read_mask_colour_modes(tmp_path):
    mask = _ellipse(20, 30, 10, 15)
    grey = mask.astype(np.uint8) * 255
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    # alpha is ignored: a fully transparent background must not change the mask
    alpha = np.where(mask, 255, 0).astype(np.uint8)
    Image.fromarray(np.dstack([grey, grey, grey, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    Image.fromarray(grey).convert("1").save(tmp_path / "bw.png")
    for name, mode in [("rgb", "RGB"), ("rgba", "RGBA"), ("p", "P"), ("bw", "1")]:
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.mode == mode
        np.testing.assert_array_equal(read_mask(tmp_path / f"{name}.png"), mask, err_msg=name)


def test_read_mask_16bit(tmp_path):
    # 8-bit equivalents: 0, 255, 128 (32896 = 128*257), 129 (33153), 128.498 -> 128, 128.502 -> 129
    values = np.array([[0, 65535, 32896, 33153, 33024, 33025]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d16.png")
    with Image.open(tmp_path / "d16.png") as im:
        assert im.mode.startswith("I;16")
    expected = [[False, True, False, True, False, True]]
    np.testing.assert_array_equal(read_mask(tmp_path / "d16.png"), expected)
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "d32.tif")  # PNG cannot store mode I
    with Image.open(tmp_path / "d32.tif") as im:
        assert im.mode == "I"
    np.testing.assert_array_equal(read_mask(tmp_path / "d32.tif"), expected)
    Image.fromarray(np.array([[70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match="outside 16-bit"):
        read_mask(tmp_path / "big.tif")


def test_read_mask_strict_like_scorer(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="not single-channel"):
        read_mask(tmp_path / "rgb.png", strict=True)
    write_mask(tmp_path / "ok.png", np.eye(4, dtype=bool))
    np.testing.assert_array_equal(read_mask(tmp_path / "ok.png", strict=True), np.eye(4, dtype=bool))


@pytest.mark.parametrize("cut", [20, 60, None])
def test_read_mask_truncated_or_garbage(tmp_path, cut):
    write_mask(tmp_path / "full.png", np.random.default_rng(0).random((64, 64)) > 0.5)
    data = (tmp_path / "full.png").read_bytes()
    bad = tmp_path / "ISIC_0000001_segmentation.png"
    bad.write_bytes(data[:cut] if cut else b"not an image at all")
    with pytest.raises(ValueError) as err:
        read_mask(bad)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}: ") and ";" in message


def test_read_mask_missing_file(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        read_mask(tmp_path / "nope.png")


# --- folder scoring ------------------------------------------------------------------------------


def _make_pairs():
    """15 (truth, pred) bool mask pairs covering ordinary overlaps and the scorer's edge cases."""
    rng = np.random.default_rng(1234)
    pairs = []
    for _ in range(8):
        cy, cx = rng.uniform(15, 33), rng.uniform(20, 44)
        ry, rx = rng.uniform(6, 15), rng.uniform(8, 20)
        truth = _ellipse(cy, cx, ry, rx)
        jitter = rng.uniform(0.5, 2.5)  # spreads per-image jaccard on both sides of 0.65
        pred = _ellipse(cy + rng.normal(0, jitter), cx + rng.normal(0, jitter),
                        ry * rng.uniform(0.85, 1.15), rx * rng.uniform(0.85, 1.15))
        pred ^= rng.random((H, W)) < 0.01  # speckle
        pairs.append((truth, pred))
    lesion = _ellipse(24, 32, 12, 18)
    empty, full = np.zeros((H, W), bool), np.ones((H, W), bool)
    pairs += [(lesion, empty), (lesion, full), (empty, empty), (empty, lesion), (full, lesion)]
    # prediction inside the truth with jaccard just below 0.65
    flat = lesion.ravel()
    keep = math.ceil(0.65 * flat.sum()) - 1
    below = np.zeros_like(flat)
    below[np.flatnonzero(flat)[:keep]] = True
    assert 0.64 < seg_scores(lesion, below.reshape(H, W))["jaccard"] < 0.65
    pairs.append((lesion, below.reshape(H, W)))
    # jaccard exactly 0.65 (130 of a 200-pixel box) is kept by threshold_jaccard
    box = np.zeros((H, W), bool)
    box[10:20, 10:30] = True
    part = np.zeros_like(box)
    part.ravel()[np.flatnonzero(box)[:130]] = True
    pairs.append((box, part))
    return pairs


def _write_folders(root, pairs):
    truth_dir, pred_dir = root / "truth", root / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    for i, (truth, pred) in enumerate(pairs, start=1):
        write_mask(truth_dir / _name(i), truth)
        write_mask(pred_dir / _name(i), pred)
    return truth_dir, pred_dir


def test_score_mask_folders_frame(tmp_path):
    pairs = _make_pairs()
    truth_dir, pred_dir = _write_folders(tmp_path, pairs[::-1])
    frame, means = score_mask_folders(truth_dir, pred_dir)
    assert list(frame.columns) == ["image_id", *SEG_METRICS]
    assert list(frame["image_id"]) == [f"ISIC_{i:07d}" for i in range(1, len(pairs) + 1)]
    row = frame.iloc[0][list(SEG_METRICS)].to_dict()
    assert row == pytest.approx(seg_scores(*pairs[-1]))
    assert means == pytest.approx(mean_scores([seg_scores(t, p) for t, p in pairs]))
    assert all(type(v) is float for v in means.values())
    assert isinstance(frame, pd.DataFrame) and frame["dice"].dtype == np.float64


def _scorer_per_image(truth_file, pred_file):
    from isic_challenge_scoring import metrics as sm
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix
    from isic_challenge_scoring.load_image import load_segmentation_image

    cm = create_binary_confusion_matrix(
        truth_binary_values=load_segmentation_image(truth_file) > 128,
        prediction_binary_values=load_segmentation_image(pred_file) > 128,
    )
    return {
        "dice": sm.binary_dice(cm),
        "jaccard": sm.binary_jaccard(cm),
        "threshold_jaccard": sm.binary_threshold_jaccard(cm, threshold=0.65),
        "accuracy": sm.binary_accuracy(cm),
        "sensitivity": sm.binary_sensitivity(cm),
        "specificity": sm.binary_specificity(cm),
    }


def _scorer_cli():
    exe = pathlib.Path(sys.executable).parent / "isic-challenge-scoring"
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    return exe


def test_agrees_with_official_scorer(tmp_path, scorer):
    """Our per-image values and macro means equal the official scorer's, via its API and its CLI."""
    from isic_challenge_scoring.segmentation import SegmentationScore

    truth_dir, pred_dir = _write_folders(tmp_path, _make_pairs())
    # one pair with grey levels around the 128 cut, written raw (not via write_mask)
    rng = np.random.default_rng(7)
    grey_truth = np.where(_ellipse(24, 32, 14, 20), 200, 20).astype(np.uint8)
    grey_pred = rng.choice(np.array([0, 127, 128, 129, 130, 255], np.uint8), size=(H, W))
    Image.fromarray(grey_truth).save(truth_dir / _name(99))
    Image.fromarray(grey_pred).save(pred_dir / _name(99))

    frame, ours = score_mask_folders(truth_dir, pred_dir)
    assert len(frame) == 16

    for row in frame.itertuples(index=False):
        name = f"{row.image_id}_segmentation.png"
        theirs = _scorer_per_image(truth_dir / name, pred_dir / name)
        for key in SEG_METRICS:
            assert getattr(row, key) == pytest.approx(float(theirs[key]), abs=1e-12), (row.image_id, key)

    api = SegmentationScore.from_dir(truth_dir, pred_dir).macro_average
    assert set(api.index) == set(SEG_METRICS)
    for key in SEG_METRICS:
        assert ours[key] == pytest.approx(float(api[key]), abs=1e-6), key

    out = subprocess.run(
        [str(_scorer_cli()), "-o", "json", "segmentation", str(truth_dir), str(pred_dir)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    cli = json.loads(out.stdout)
    assert set(cli["macro_average"]) == set(SEG_METRICS)
    for key in SEG_METRICS:
        assert ours[key] == pytest.approx(cli["macro_average"][key], abs=1e-6), key
    assert cli["overall"] == pytest.approx(ours["threshold_jaccard"], abs=1e-6)


def test_prediction_pairing_follows_scorer(tmp_path, scorer):
    """Predictions match by the id's 7 digits anywhere in the stem; extra files are ignored."""
    from isic_challenge_scoring.segmentation import SegmentationScore

    pairs = _make_pairs()[:3]
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    (truth_dir / "LICENSE.txt").write_text("skipped by the scorer")
    for i, ((truth, pred), pred_name) in enumerate(
        zip(pairs, ["ISIC_0000001.png", "pred_0000002.png", "ISIC_0000003_segmentation.png"]), start=1
    ):
        write_mask(truth_dir / _name(i), truth)
        write_mask(pred_dir / pred_name, pred)
    write_mask(pred_dir / "ISIC_0000042_segmentation.png", pairs[0][1])  # no truth: ignored
    frame, ours = score_mask_folders(truth_dir, pred_dir)
    assert list(frame["image_id"]) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    api = SegmentationScore.from_dir(truth_dir, pred_dir).macro_average
    for key in SEG_METRICS:
        assert ours[key] == pytest.approx(float(api[key]), abs=1e-6), key

    write_mask(pred_dir / "ISIC_0000002_segmentation.png", pairs[1][1])  # now two candidates
    with pytest.raises(ValueError, match="several predictions match ISIC_0000002_segmentation.png"):
        score_mask_folders(truth_dir, pred_dir)
    with pytest.raises(Exception, match="Multiple matching"):
        SegmentationScore.from_dir(truth_dir, pred_dir)


def test_folder_errors(tmp_path):
    pairs = _make_pairs()[:3]
    truth_dir, pred_dir = _write_folders(tmp_path, pairs)

    (pred_dir / _name(2)).unlink()
    (pred_dir / _name(3)).unlink()
    with pytest.raises(ValueError, match="ISIC_0000002, ISIC_0000003") as err:
        score_mask_folders(truth_dir, pred_dir)
    assert "\n" not in str(err.value)

    write_mask(pred_dir / _name(2), pairs[1][1])
    write_mask(pred_dir / _name(3), np.zeros((H + 1, W), bool))
    with pytest.raises(ValueError) as err:
        score_mask_folders(truth_dir, pred_dir)
    assert str(pred_dir / _name(3)) in str(err.value) and str(truth_dir / _name(3)) in str(err.value)
    assert "64x49" in str(err.value) and "64x48" in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}: folder holds no ground-truth"):
        score_mask_folders(empty, pred_dir)
    with pytest.raises(ValueError, match=f"{empty}: folder holds no predicted"):
        score_mask_folders(truth_dir, empty)
    with pytest.raises(ValueError, match="not a folder"):
        score_mask_folders(tmp_path / "absent", pred_dir)

    (truth_dir / "notes.png").write_bytes(b"")
    with pytest.raises(ValueError, match="notes.png: no ISIC id"):
        score_mask_folders(truth_dir, pred_dir)


def test_scorer_fails_where_we_fail(tmp_path, scorer):
    """Missing and wrongly sized predictions are errors for the official scorer too."""
    from isic_challenge_scoring.segmentation import SegmentationScore

    pairs = _make_pairs()[:2]
    truth_dir, pred_dir = _write_folders(tmp_path, pairs)
    write_mask(pred_dir / _name(2), np.zeros((H, W + 2), bool))
    with pytest.raises(Exception, match="dimensions"):
        SegmentationScore.from_dir(truth_dir, pred_dir)
    with pytest.raises(ValueError, match="differs from ground truth"):
        score_mask_folders(truth_dir, pred_dir)
    (pred_dir / _name(2)).unlink()
    with pytest.raises(Exception, match="No matching submission"):
        SegmentationScore.from_dir(truth_dir, pred_dir)
    with pytest.raises(ValueError, match="ISIC_0000002"):
        score_mask_folders(truth_dir, pred_dir)


# --- the balanced decision (prior correction) ----------------------------------------------------


def test_prior_corrected_by_hand():
    from skinkeras.metrics import prior_corrected

    # [0.6, 0.4] / [0.75, 0.25] = [0.8, 1.6] -> [1/3, 2/3]: the decision moves to the rarer class.
    np.testing.assert_allclose(prior_corrected([[0.6, 0.4]], [0.75, 0.25]), [[1 / 3, 2 / 3]])
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=5)
    np.testing.assert_allclose(prior_corrected(probs, np.full(4, 0.25)), probs)  # a uniform prior changes nothing
    with pytest.raises(ValueError, match="positive class shares"):
        prior_corrected(probs, [0.5, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="4 positive"):
        prior_corrected(probs, [0.5, 0.5])


def test_prior_corrected_is_the_balanced_bayes_decision():
    from skinkeras.metrics import classification_scores, prior_corrected

    # Two classes, x ~ N(0, 1) and N(2, 1), trained on 90% / 10%: the exact posterior under that prior.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [5000, 5000])
    x = rng.normal(2.0 * labels, 1.0)
    like = np.stack([np.exp(-x**2 / 2), np.exp(-(x - 2) ** 2 / 2)], axis=1)
    posterior = like * [0.9, 0.1]
    posterior /= posterior.sum(axis=1, keepdims=True)
    corrected = prior_corrected(posterior, [0.9, 0.1])
    # Under a uniform prior the Bayes decision for equal variances is the midpoint: exactly these decisions.
    np.testing.assert_array_equal(corrected.argmax(axis=1), (x > 1.0).astype(int))
    raw = classification_scores(labels, posterior, ["a", "b"])["balanced_accuracy"]
    balanced = classification_scores(labels, corrected, ["a", "b"])["balanced_accuracy"]
    # Phi(1) = 0.841 against the raw argmax's threshold t = 1 + ln 9 / 2: (Phi(t) + Phi(2 - t)) / 2 = 0.721.
    assert balanced == pytest.approx(0.841, abs=0.01) and raw == pytest.approx(0.721, abs=0.01)
