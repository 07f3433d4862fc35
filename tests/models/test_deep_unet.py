"""Deep-UNet structure, outputs, errors and .keras round-trip (per backend); full size once, marked slow."""

import keras
import numpy as np
import pytest

from skinkeras.layers import ASPP, DepthwiseAttentionGate
from skinkeras.models.deep_unet import build_deep_unet
from skinkeras.models.contract import export_model

pytestmark = pytest.mark.backend


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(0)
    return build_deep_unet(64, encoder="mobilenetv2", weights=None, decoder_filters=(32, 24, 16, 8, 8),
                           aspp_filters=16)


def images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def test_outputs_and_deep_supervision_heads(small_model):
    out = small_model.predict(images(), verbose=0)
    assert set(out) == {"mask", "aux1", "aux2"}
    for value in out.values():
        assert value.shape == (2, 64, 64, 1)
        assert value.min() >= 0.0 and value.max() <= 1.0
    # The aux heads are separate predictions, not copies of the main mask (batch statistics, since
    # an untrained network in inference mode outputs ~0.5 everywhere).
    out = {k: keras.ops.convert_to_numpy(v) for k, v in small_model(images(), training=True).items()}
    assert np.abs(out["mask"] - out["aux1"]).max() > 1e-3 and np.abs(out["aux1"] - out["aux2"]).max() > 1e-3


def test_paper_blocks_present(small_model):
    kinds = [type(layer) for layer in small_model.layers]
    assert kinds.count(DepthwiseAttentionGate) == 4
    assert kinds.count(ASPP) == 1
    assert small_model.get_layer("aspp").rates == (1, 2, 3)
    ups = [layer for layer in small_model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert len(ups) == 5


def test_inference_model_drops_aux_heads_and_roundtrips(small_model, tmp_path):
    inf = export_model(small_model)
    x = images(seed=1)
    pred = inf.predict(x, verbose=0)
    assert pred.shape == (2, 64, 64, 1)
    np.testing.assert_allclose(pred, small_model.predict(x, verbose=0)["mask"], atol=1e-6)
    path = tmp_path / "best.keras"
    inf.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), pred, atol=1e-5)


def test_without_deep_supervision_single_output():
    model = build_deep_unet(64, encoder="mobilenetv2", weights=None, decoder_filters=(16, 8, 8, 8, 8),
                            aspp_filters=8, deep_supervision=False)
    assert model.output_shape == (None, 64, 64, 1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_deep_unet(100, encoder="mobilenetv2", weights=None)
    with pytest.raises(ValueError, match="valid encoders: .*efficientnetb3"):
        build_deep_unet(64, encoder="vgg16", weights=None)
    with pytest.raises(ValueError, match="no stride-aligned skips.*valid: .*mobilenetv2"):
        build_deep_unet(96, encoder="xception", weights=None)


@pytest.mark.slow
def test_full_size_paper_model():
    model = build_deep_unet(224, encoder="efficientnetb3", weights=None)
    assert tuple(model.output["mask"].shape) == (None, 224, 224, 1)
    encoder = model.get_layer("efficientnetb3_features")
    # EfficientNetB3 without top has 10,783,535 parameters; the decoder adds the rest.
    assert encoder.count_params() == 10_783_535
    assert model.count_params() > encoder.count_params()
    out = model(np.zeros((1, 224, 224, 3), "float32"), training=False)
    assert tuple(out["aux2"].shape) == (1, 224, 224, 1)
