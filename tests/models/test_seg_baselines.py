"""U-Net, U-Net++ and DeepLabV3+ on the encoder table (per backend)."""

import keras
import numpy as np
import pytest

from skinkeras.models.seg_baselines import SEG_ARCHS, build_segmentation_model, inference_model

pytestmark = pytest.mark.backend


@pytest.mark.parametrize("arch", ["unet", "unetpp", "deeplabv3plus"])
def test_baseline_predicts_full_size_mask(arch):
    keras.utils.set_random_seed(0)
    model = build_segmentation_model(arch, image_size=64, encoder="mobilenetv2", weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    pred = inference_model(model).predict(x, verbose=0)
    assert pred.shape == (2, 64, 64, 1)
    assert 0.0 <= pred.min() and pred.max() <= 1.0
    assert model.count_params() > 2_257_984  # more than the MobileNetV2 encoder alone


def test_unetpp_has_nested_nodes():
    model = build_segmentation_model("unetpp", image_size=64, encoder="mobilenetv2", weights=None)
    names = {layer.name for layer in model.layers}
    # X[i][j] for every level i and column j with i + j <= 4 (10 nested nodes).
    assert {f"x{i}{j}_concat" for j in range(1, 5) for i in range(5 - j)} <= names


def test_unknown_arch_lists_valid():
    with pytest.raises(ValueError, match="valid: " + ", ".join(SEG_ARCHS)):
        build_segmentation_model("segformer", image_size=64, encoder="mobilenetv2", weights=None)
