"""Taking CAMs leaves the model as it was: same config, and it still saves, loads and explains the same."""

import keras
import numpy as np
import pytest

from skinkeras.explain.gradcam import grad_cam

pytestmark = pytest.mark.backend

CLASSES = [0, 3, 6, 1]


def small_tdbn():
    from cam_fixtures import calibrated_tdbn, cam_inputs

    model = calibrated_tdbn(n=16, image_size=32, ffn_dim=64, head_units=(32,), tabular_units=(16, 32))
    return model, cam_inputs(4, size=32), "block_13_expand_relu"  # stride 16: 2x2 maps at 32 px


def small_vit():
    from skinkeras.models.cls_baselines import build_cls_baseline

    keras.utils.set_random_seed(0)
    model = build_cls_baseline("vit", 7, (32, 64), None, vit_patch_size=16, vit_dim=16, vit_depth=2, vit_heads=2,
                               vit_mlp_dim=32, head_units=(16,))
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 64, 3)).astype("float32")
    return model, {"original": images}, "vit_block0"


def probabilities(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


@pytest.mark.parametrize("build", [small_tdbn, small_vit], ids=["tdbn", "vit"])
def test_cams_leave_the_model_savable(build, tmp_path):
    model, inputs, inner = build()
    before = model.get_config()
    # One inner layer (the default last-block target is covered by test_gradcam.py): each CAM rebuilds split
    # models, which costs JAX about 25 s per call here.
    results = {inner: grad_cam(model, inputs, class_index=CLASSES, layer=inner)}
    assert model.get_config() == before
    # The split models hold their own copy of the weights (they are built on a clone).
    own = {id(v) for v in model.weights}
    for target in results[inner].targets:
        assert not own & {id(v) for v in target.features.weights + target.head.weights}

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(probabilities(loaded, inputs), probabilities(model, inputs), atol=1e-5)
    assert max(raw.max() for raw in results[inner].raw.values()) > 0  # a comparison of non-trivial maps
    for layer, result in results.items():
        again = grad_cam(loaded, inputs, class_index=CLASSES, layer=layer)
        assert [t.layer for t in again.targets] == [t.layer for t in result.targets]
        for branch, raw in result.raw.items():
            np.testing.assert_allclose(again.raw[branch], raw, atol=1e-4, err_msg=f"{layer}/{branch}")
            np.testing.assert_array_equal(again.degenerate[branch], result.degenerate[branch])

