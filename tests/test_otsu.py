"""Otsu lesion-segmentation baseline: the threshold against a brute-force reference, synthetic images, folders."""


import numpy as np
import pytest
from PIL import Image

from skinkeras.otsu import otsu_mask, otsu_threshold, segment_folder_otsu


def _between_class_variance(values, t):
    """w0 * w1 * (mu0 - mu1)^2 with the dark class values <= t, straight from the definition."""
    dark, light = values[values <= t], values[values > t]
    if dark.size == 0 or light.size == 0:
        return 0.0
    w0, w1 = dark.size / values.size, light.size / values.size
    return w0 * w1 * (dark.mean() - light.mean()) ** 2


def _dice(truth, pred):
    return 2.0 * np.sum(truth & pred) / (truth.sum() + pred.sum())


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _skin_image(shape=(300, 420), seed=0):
    """Skin with a dark lesion blob, black vignette corners and a thin dark hair; returns (image, blob)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    image = np.empty((h, w, 3), np.float64)
    image[:] = (215, 165, 145)
    blob = _ellipse(shape, h * 0.52, w * 0.45, h * 0.2, w * 0.17)
    image[blob] = (125, 75, 55)
    # The hair crosses skin and lesion; 2 px wide, much thinner than the smoothing removes.
    yy, xx = np.mgrid[:h, :w]
    hair = np.abs((yy - 0.15 * h) - 0.55 * (xx - 0.1 * w)) < 1.0
    image[hair] = (45, 30, 25)
    image += rng.normal(0, 8, image.shape)
    vignette = ((yy - (h - 1) / 2) / (0.46 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.46 * w)) ** 2 > 1.0
    image[vignette] = rng.integers(0, 12, (int(vignette.sum()), 1))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), blob


# --- otsu_threshold ---------------------------------------------------------------------------------


def test_threshold_matches_brute_force_on_bimodal_sample():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(60, 12, 3000), rng.normal(170, 18, 5000)])
    values = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    t = otsu_threshold(values)
    assert isinstance(t, float)
    assert 60 < t < 170
    reference = [_between_class_variance(values.astype(np.float64), s) for s in range(256)]
    assert _between_class_variance(values.astype(np.float64), t) == pytest.approx(max(reference), rel=1e-9)
    assert abs(t - int(np.argmax(reference))) <= 1


def test_threshold_splits_two_levels_in_the_gap_and_survives_constant_input():
    values = np.array([50] * 30 + [200] * 70, np.uint8)
    t = otsu_threshold(values)
    assert 50 <= t < 200
    assert t == (50 + 199) // 2  # middle of the tied run of maximisers
    assert otsu_threshold(np.full(10, 7, np.uint8)) == 7.0
    assert otsu_threshold(np.array([], np.uint8)) == 0.0


# --- otsu_mask ---------------------------------------------------------------------------------------


def test_mask_finds_blob_despite_dark_corners_and_hair():
    image, blob = _skin_image()
    mask = otsu_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    assert _dice(blob, mask) > 0.9
    assert not mask[:10, :10].any() and not mask[-10:, -10:].any()


def test_mask_keeps_original_size_when_downscaling():
    image, blob = _skin_image(shape=(330, 700), seed=2)
    mask = otsu_mask(image, work_size=256)
    assert mask.shape == (330, 700)
    assert _dice(blob, mask) > 0.9


@pytest.mark.parametrize(
    "image",
    [
        np.full((40, 60, 3), 180, np.uint8),  # blank skin
        np.zeros((40, 60, 3), np.uint8),  # all vignette
        np.zeros((1, 1, 3), np.uint8),
        np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8),
        np.full((30, 20), 90, np.uint8),  # greyscale
        np.zeros((0, 10, 3), np.uint8),
    ],
    ids=["blank", "black", "1x1", "tiny-noise", "grey", "empty"],
)
def test_mask_never_raises_on_odd_images(image):
    mask = otsu_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape[:2]


def test_mask_is_empty_on_featureless_skin():
    rng = np.random.default_rng(5)
    skin = np.clip(np.rint(np.array([215.0, 165.0, 145.0]) + rng.normal(0, 8, (120, 160, 3))), 0, 255)
    assert not otsu_mask(skin.astype(np.uint8)).any()
    assert not otsu_mask(np.zeros((40, 60, 3), np.uint8)).any()


def test_module_imports_no_deep_learning_backend_at_top_level():
    # `import skinkeras` registers the layers (Keras); the Otsu baseline itself needs none at import time.
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[1] / "skinkeras" / "otsu.py").read_text())
    top = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    top += [node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module]
    assert not [m for m in top if m.split(".")[0] in ("keras", "jax", "tensorflow", "torch", "skinkeras")], top


# --- segment_folder_otsu -----------------------------------------------------------------------------


def test_segment_folder_writes_official_names_and_skips_truncated(tmp_path):
    from skinkeras.data.masks import read_mask

    images = tmp_path / "images"
    images.mkdir()
    for i, seed in enumerate((3, 4)):
        Image.fromarray(_skin_image(shape=(120, 160), seed=seed)[0]).save(images / f"ISIC_000000{i}.png")
    good = images / "ISIC_0000000.png"
    (images / "ISIC_0000009.jpg").write_bytes(good.read_bytes()[:200])
    (images / "LICENSE.txt").write_text("not an image")
    seen = []
    result = segment_folder_otsu(images, tmp_path / "out", progress=seen.append)

    pred_dir = tmp_path / "out" / "masks"
    assert result["pred_dir"] == pred_dir
    assert result["written"] == 2
    assert sorted(p.name for p in pred_dir.iterdir()) == [
        "ISIC_0000000_segmentation.png",
        "ISIC_0000001_segmentation.png",
    ]
    assert [p for p, _ in result["skipped"]] == [str(images / "ISIC_0000009.jpg")]
    assert "ISIC_0000009.jpg" in result["skipped"][0][1]
    assert len(seen) == 3
    with Image.open(pred_dir / "ISIC_0000000_segmentation.png") as png:
        assert png.mode == "L" and png.size == (160, 120)
        assert set(np.unique(np.asarray(png))) <= {0, 255}
    assert read_mask(pred_dir / "ISIC_0000001_segmentation.png").any()


@pytest.mark.shared_data
def test_real_isic_sample_mean_dice(shared_data, tmp_path):
    from skinkeras.metrics import score_mask_folders

    root = shared_data / "isic2018_task1_sample"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    result = segment_folder_otsu(root / "ISIC2018_Task1-2_Training_Input", tmp_path)
    assert result["skipped"] == []
    _, means = score_mask_folders(root / "ISIC2018_Task1_Training_GroundTruth", result["pred_dir"])
    assert means["dice"] > 0.6
