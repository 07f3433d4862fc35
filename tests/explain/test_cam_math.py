"""Grad-CAM arithmetic, normalisation, measures and rendering (numpy only)."""

import numpy as np
import pytest

from skinkeras.explain.gradcam import (
    cam_mass_in_mask,
    overlay,
    plot_cam_grid,
    pointing_game,
    raw_cam,
    tokens_to_grid,
    degenerate_maps,
    upsample_cams,
    weight_ratio,
)


def test_raw_cam_is_relu_of_gradient_weighted_channels():
    rng = np.random.default_rng(0)
    fmap, grads = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    expected = np.zeros((2, 3, 4))
    for b in range(2):
        for c in range(5):
            expected[b] += grads[b, :, :, c].mean() * fmap[b, :, :, c]
    np.testing.assert_allclose(raw_cam(fmap, grads), np.maximum(expected, 0), rtol=1e-5, atol=1e-6)


def test_upsample_keeps_orientation_and_normalises():
    raw = np.zeros((2, 3, 4), np.float32)
    raw[0, 0, 3] = 2.0  # top right
    cams = upsample_cams(raw, (30, 40))
    assert cams.shape == (2, 30, 40)
    assert cams[0].max() == pytest.approx(1.0)
    row, col = np.unravel_index(cams[0].argmax(), cams[0].shape)
    assert row < 10 and col >= 30
    assert (cams[1] == 0).all()  # an all-zero map stays zero, it is not divided by 0


def test_mass_and_pointing_game():
    cam = np.zeros((4, 4))
    cam[0, 0], cam[3, 3] = 3.0, 1.0
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    assert cam_mass_in_mask(cam, mask) == pytest.approx(0.75)
    assert pointing_game(cam, mask) == 1.0
    assert pointing_game(cam, ~mask) == 0.0
    assert np.isnan(cam_mass_in_mask(np.zeros((4, 4)), mask))
    assert np.isnan(pointing_game(np.zeros((4, 4)), mask))


def test_tokens_to_grid_drops_the_class_token():
    tokens = np.arange(1 + 8, dtype=np.float32).reshape(1, 9, 1)
    grid = tokens_to_grid(tokens, (32, 64))
    assert grid.shape == (1, 2, 4, 1)
    assert grid[0, 0, 0, 0] == 1.0 and grid[0, 1, 3, 0] == 8.0
    with pytest.raises(ValueError, match="patch grid"):
        tokens_to_grid(np.zeros((1, 7, 1)), (32, 64))


def test_overlay_and_grid(tmp_path):
    image = np.full((20, 30, 3), 100, np.uint8)
    cam = np.zeros((20, 30))
    cam[5, 5] = 1.0
    blended = overlay(image, cam)
    assert blended.dtype == np.uint8 and blended.shape == image.shape
    assert not np.array_equal(blended[5, 5], blended[15, 25])
    path = tmp_path / "grid.png"
    plot_cam_grid([("a", [image, blended]), ("b", [image, None])], ["Original", "CAM"], path)
    assert path.stat().st_size > 1000


def test_layercam_weights_each_position_by_its_own_positive_gradient():
    fmap = np.ones((1, 2, 2, 1))
    grads = np.array([1.0, -1.0, 2.0, -2.0]).reshape(1, 2, 2, 1)
    # Grad-CAM's mean weight is 0 here (degenerate); LayerCAM keeps the positive positions.
    assert weight_ratio(grads)[0] == pytest.approx(0.0)
    assert (raw_cam(fmap, grads, "gradcam") == 0).all()
    np.testing.assert_allclose(raw_cam(fmap, grads, "layercam")[0], [[1.0, 0.0], [2.0, 0.0]])
    assert weight_ratio(np.abs(grads))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid: gradcam, layercam"):
        raw_cam(fmap, grads, "cam++")


def test_degenerate_maps_flags_cancelling_weights_and_vanished_gradients():
    fmap = np.ones((3, 2, 2, 1))
    grads = np.stack([np.array([1.0, -1.0, 2.0, -2.0]),  # weights cancel: Grad-CAM has nothing, LayerCAM has
                      np.array([1e-27, -3e-27, 2e-27, 5e-28]),  # underflow noise behind a saturated softmax
                      np.array([0.5, 0.2, 0.1, 0.3])]).reshape(3, 2, 2, 1)
    scores = np.array([2.0, 2.0, 2.0])
    assert degenerate_maps(fmap, grads, scores, "gradcam").tolist() == [True, True, False]
    assert degenerate_maps(fmap, grads, scores, "layercam").tolist() == [False, True, False]
