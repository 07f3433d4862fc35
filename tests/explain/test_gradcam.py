"""Grad-CAM through the active backend's gradients: a known answer, TDBN / baseline targets, the measures."""

import keras
import numpy as np
import pytest

from skinkeras.explain.gradcam import cam_mass_in_mask, cam_targets, grad_cam, pointing_game, upsample_cams

pytestmark = pytest.mark.backend

H, W = 48, 64  # not square, so a transposed map would fail


def two_blob_classifier(features_name="features", scores_name="logits", model_class=keras.Model, contract=None):
    """Class 0 = "redness" and class 1 = "greenness", summed over the image: the answer is known.

    `features` (1x1 conv + ReLU) has channel 0 = relu(R - G) and channel 1 =
    relu(G - R); global average pooling and an identity `logits` layer make
    the score of class k the mean of channel k. Grad-CAM for class 0 must be
    exactly channel 0 (the red blob), for class 1 channel 1 (the green blob).

    Args:
        features_name: name of the feature layer.
        scores_name: name of the pre-softmax score layer.
        model_class: keras.Model, or SkinModel (then with `contract`).
        contract: the SkinModel's `Contract`.
    """
    image = keras.Input((H, W, 3), name="original")
    features = keras.layers.Conv2D(2, 1, activation="relu", name=features_name)
    x = features(image)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(2, name=scores_name)
    out = keras.layers.Activation("softmax", name="probabilities")(logits(x))
    extra = {} if contract is None else {"contract": contract}
    model = model_class({"original": image}, out, **extra)
    features.set_weights([np.array([[[[1, -1], [-1, 1], [0, 0]]]], np.float32), np.zeros(2, np.float32)])
    logits.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def blob_image():
    image = np.zeros((1, H, W, 3), np.float32)
    red = np.zeros((H, W), bool)
    red[4:16, 6:22] = True
    green = np.zeros((H, W), bool)
    green[30:44, 40:60] = True
    image[0][red] = (200, 0, 0)
    image[0][green] = (0, 150, 0)
    return image, red, green


def test_cam_sits_on_the_region_the_class_score_depends_on():
    model = two_blob_classifier()
    image, red, green = blob_image()
    for cls, region, value in ((0, red, 200.0), (1, green, 150.0)):
        result = grad_cam(model, {"original": image}, class_index=cls, layer="features")
        raw = result.raw["original"][0]
        # dScore/dA_k = 1/(H*W) everywhere, so the CAM is A_k / (H*W): the blob's value inside, 0 outside.
        expected = np.where(region, value / (H * W), 0.0)
        np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-9)
        cam = upsample_cams(result.raw["original"], (H, W))[0]
        assert cam_mass_in_mask(cam, region) == pytest.approx(1.0)
        assert pointing_game(cam, region) == 1.0
        other = green if cls == 0 else red
        assert cam_mass_in_mask(cam, other) == 0.0


def test_predicted_class_is_the_default():
    model = two_blob_classifier()
    image, red, _ = blob_image()  # green wins: 150 * 280 px > 200 * 192 px
    result = grad_cam(model, {"original": image}, layer="features")
    assert result.class_index.tolist() == [1]
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert result.raw["original"][0][red].max() == 0.0


def test_targets_scores_and_flags_come_from_the_contract():
    from skinkeras.models.contract import CLASSIFICATION, Contract, ExplanationTarget, SkinModel

    image, red, _ = blob_image()
    for keys_only in (False, True):
        target = ExplanationTarget("blobs", "blob_map", "original", keys_only=keys_only)
        contract = Contract(CLASSIFICATION, ("original",), "probabilities", "class_scores", (target,))
        model = two_blob_classifier("blob_map", "class_scores", SkinModel, contract)
        result = grad_cam(model, {"original": image}, class_index=0)
        assert [(t.branch, t.layer, t.keys_only) for t in result.targets] == [("blobs", "blob_map", keys_only)]
        # The exact answer holds for the pre-softmax scores only (through the softmax, the green blob would
        # enter with a negative weight): the scores are the contract's score layer, not the output.
        expected = np.zeros((H, W)) if keys_only else np.where(red, 200.0 / (H * W), 0.0)
        np.testing.assert_allclose(result.raw["blobs"][0], expected, rtol=1e-5, atol=1e-9)
        assert result.degenerate["blobs"].tolist() == [keys_only]


def test_a_layer_that_the_image_bypasses_is_not_a_cut():
    image = keras.Input((H, W, 3), name="original")
    inner = keras.layers.Conv2D(2, 1, name="inner")(image)
    x = keras.layers.Add(name="residual")([inner, keras.layers.Conv2D(2, 1, name="skip")(image)])
    x = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model({"original": image}, keras.layers.Activation("softmax", name="probabilities")(x))
    with pytest.raises(ValueError, match="not a cut of the graph: original also reaches the scores"):
        cam_targets(model, "inner")
    with pytest.raises(ValueError, match=r"needs a \(B, h, w, C\) map or \(B, T, D\) tokens; 'gap' gives"):
        cam_targets(model, "gap")
    assert [t.branch for t in cam_targets(model, "residual")] == ["original"]


@pytest.fixture(scope="module")
def small_tdbn():
    from cam_fixtures import calibrated_tdbn, cam_inputs

    inputs = cam_inputs()
    model = calibrated_tdbn()
    # One set of targets (one clone of the model) for the module: each clone is a rebuild, slow under JAX.
    return model, inputs, cam_targets(model)


CLASSES = [0, 3, 6, 1, 2, 5]


def test_tdbn_gives_one_map_per_branch(small_tdbn):
    model, inputs, targets = small_tdbn
    # Batches of 3 and of 6: two shapes, each traced once under JAX (the later tests reuse the 6).
    result = grad_cam(model, inputs, class_index=CLASSES, batch_size=3, targets=targets)
    assert set(result.raw) == {"original", "segmented"}
    for branch, maps in result.raw.items():
        assert maps.shape == (6, 2, 2), branch
        assert (maps >= 0).all()
    assert result.class_index.tolist() == CLASSES
    assert not result.degenerate["original"].any()
    assert (result.raw["original"].max(axis=(1, 2)) > 0).sum() >= 4
    # Batching does not change a map (inference mode: samples do not interact).
    again = grad_cam(model, inputs, class_index=CLASSES, batch_size=6, targets=targets)
    np.testing.assert_allclose(upsample_cams(again.raw["original"], (64, 64)),
                               upsample_cams(result.raw["original"], (64, 64)), atol=1e-3)


def test_segmented_branch_gradcam_is_degenerate_and_layercam_is_not(small_tdbn):
    # The segmented tokens are only attention keys: shifting one channel at every position moves every attention
    # logit of a query by the same amount, which the softmax removes, so Grad-CAM's spatially averaged weights
    # are round-off. They are reported as degenerate and drawn as zero maps, never as amplified noise.
    model, inputs, targets = small_tdbn
    result = grad_cam(model, inputs, class_index=CLASSES, targets=targets)
    assert [t.keys_only for t in result.targets] == [False, True]
    assert result.degenerate["segmented"].all()
    assert (result.raw["segmented"] == 0).all()
    layer = grad_cam(model, inputs, class_index=CLASSES, method="layercam", targets=targets)
    assert not layer.degenerate["segmented"].any()
    assert (layer.raw["segmented"].max(axis=(1, 2)) > 0).all()
    # ... and it follows the segmented image: the keys decide which original tokens the attention mixes.
    flipped = dict(inputs, segmented=inputs["segmented"][:, ::-1].copy())
    moved = grad_cam(model, flipped, class_index=CLASSES, method="layercam", targets=targets)
    assert np.abs(upsample_cams(moved.raw["segmented"], (64, 64))
                  - upsample_cams(layer.raw["segmented"], (64, 64))).max() > 0.1


def test_layer_inside_both_encoders_gives_two_finer_maps(small_tdbn):
    model, inputs, _ = small_tdbn
    targets = cam_targets(model, "block_13_expand_relu")  # stride 16
    assert [t.layer for t in targets] == ["original_encoder/block_13_expand_relu",
                                          "segmented_encoder/block_13_expand_relu"]
    result = grad_cam(model, inputs, targets=targets, class_index=1)
    assert result.raw["original"].shape == (6, 4, 4)


def test_unknown_layer_lists_the_top_level_ones(small_tdbn):
    model, _, _ = small_tdbn
    with pytest.raises(ValueError, match="No layer 'nope'.*cross_attention"):
        cam_targets(model, "nope")


def test_vit_tokens_become_a_patch_grid():
    from skinkeras.models.cls_baselines import build_cls_baseline

    model = build_cls_baseline("vit", 7, (32, 64), None, vit_patch_size=16, vit_dim=16, vit_depth=2, vit_heads=2,
                               vit_mlp_dim=32)
    result = grad_cam(model, {"original": np.random.default_rng(0).uniform(0, 255, (2, 32, 64, 3))})
    # the tokens entering the last block: the last block's own patch outputs never reach the head
    assert result.targets[0].layer == "vit_block0"
    assert (result.raw["original"] > 0).any()
    assert result.raw["original"].shape == (2, 2, 4)
