"""U-Net, U-Net++ and DeepLabV3+ on the encoder table (per backend)."""

import keras
import numpy as np
import pytest

from skinkeras.models.contract import IMAGE, MASK, SEGMENTATION, contract_of, export_model
from skinkeras.models.registry import get_architecture

pytestmark = pytest.mark.backend


@pytest.mark.parametrize("arch", ["unet", "unetpp", "deeplabv3plus"])
def test_baseline_predicts_full_size_mask(arch):
    keras.utils.set_random_seed(0)
    model = get_architecture(arch, SEGMENTATION).builder(image_size=64, encoder="mobilenetv2", weights=None)
    contract = contract_of(model)
    assert (contract.task, contract.inputs, contract.output, contract.arch) == (SEGMENTATION, (IMAGE,), MASK, arch)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    pred = export_model(model).predict(x, verbose=0)
    assert pred.shape == (2, 64, 64, 1)
    assert 0.0 <= pred.min() and pred.max() <= 1.0
    assert model.count_params() > 2_257_984  # more than the MobileNetV2 encoder alone


def test_unetpp_has_nested_nodes():
    model = get_architecture("unetpp").builder(image_size=64, encoder="mobilenetv2", weights=None)
    names = {layer.name for layer in model.layers}
    # X[i][j] for every level i and column j with i + j <= 4 (10 nested nodes).
    assert {f"x{i}{j}_concat" for j in range(1, 5) for i in range(5 - j)} <= names
