"""channels_first encoders (skinkeras.models.layout): the same function and weights as channels_last, on torch."""

import keras
import numpy as np
import pytest

from skinkeras.models.encoders import build_encoder
from skinkeras.models.layout import channels_first_copy, data_format, data_format_scope, runs_channels_first
from skinkeras.models.tdbn import build_tdbn
from test_tdbn import SMALL, batch, calibrate, predict


def np_(x):
    return keras.ops.convert_to_numpy(x)


def randomise_batch_norms(model, seed=0):
    """Per-channel BatchNorm scales, offsets and moving statistics drawn near 1 and 0.

    Not flat (each channel's map then depends on its own statistics, so a wrong axis shows), and well
    conditioned: statistics measured on a small batch would give near-zero variances that amplify the
    rounding of one layout's kernels against the other's by many orders of magnitude.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if i in (0, 3) else
                               rng.uniform(-0.1, 0.1, w.shape).astype("float32")
                               for i, w in enumerate(layer.get_weights())])


def assert_same_map(name):
    """The channels_first copy of encoder `name` gives its channels-last map, transposed."""
    keras.utils.set_random_seed(0)
    last = build_encoder(name, (32, 32, 3), model_name="enc")
    first = channels_first_copy(last)
    assert first.name == "enc" and [l.name for l in first.layers] == [l.name for l in last.layers]
    assert runs_channels_first(first) and not runs_channels_first(last)
    randomise_batch_norms(last)
    first.set_weights(last.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    want = np_(last(x, training=False))
    got = np.transpose(np_(first(np.transpose(x, (0, 3, 1, 2)), training=False)), (0, 2, 3, 1))
    assert np.abs(want).max() > 1e-3
    # Identical on one thread; with several, the two layouts may pick other convolution kernels.
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("name", ["densenet121", "efficientnetb0", "resnet50", "efficientnet_lite0"])  # mobilenetv2: below
def test_channels_first_copy_computes_the_same_map(name):
    """Every kind of layer the table's encoders hold (BN axes, concatenations, depthwise, squeeze-excitation's
    reshape, Normalization, padding, pooling) moves to NCHW with the same weights and names."""
    assert_same_map(name)


def test_build_encoder_follows_the_image_data_format_and_restores_it():
    with data_format_scope("channels_first"):
        encoder = build_encoder("densenet121", (32, 32, 3))  # keras.applications alone refuses this
        assert data_format() == "channels_first"
    assert data_format() == "channels_last"
    assert tuple(encoder.input.shape[1:]) == (3, 32, 32) and encoder.output.shape[1] == 1024


@pytest.fixture(scope="module")
def pair():
    """The small TDBN built channels_last and channels_first with the same weights, BN statistics calibrated."""
    keras.utils.set_random_seed(0)
    last = build_tdbn(7, **SMALL)
    calibrate(last, batch(4, seed=5))
    with data_format_scope("channels_first"):
        first = build_tdbn(7, **SMALL)
    first.set_weights(last.get_weights())
    return last, first


def test_tdbn_channels_first_predicts_like_channels_last_and_keeps_its_contract(pair, tmp_path):
    last, first = pair
    data = batch(4, seed=1)
    want = predict(last, data)
    np.testing.assert_allclose(predict(first, data), want, atol=1e-4)
    assert [t.shape[1:] for t in first.inputs] == [t.shape[1:] for t in last.inputs]  # inputs stay (H, W, 3)
    assert runs_channels_first(first.get_layer("original_encoder"))
    # A saved channels_first model carries its layouts: it loads and predicts the same under channels_last.
    first.save(tmp_path / "first.keras")
    loaded = keras.models.load_model(tmp_path / "first.keras")
    np.testing.assert_allclose(predict(loaded, data), want, atol=1e-4)


def test_grad_cam_of_a_channels_first_tdbn_equals_channels_last(pair):
    from skinkeras.explain.gradcam import grad_cam

    last, first = pair
    data = batch(2, seed=2)
    want, got = grad_cam(last, data, class_index=3), grad_cam(first, data, class_index=3)
    assert [t.layer for t in got.targets] == ["original_features", "segmented_features"]
    for branch in ("original", "segmented"):
        assert got.raw[branch].shape == want.raw[branch].shape == (2, 2, 2)
        scale = max(np.abs(want.raw[branch]).max(), 1e-12)
        np.testing.assert_allclose(got.raw[branch], want.raw[branch], rtol=1e-2, atol=1e-2 * scale)
    assert want.raw["original"].max() > 0
    with pytest.raises(ValueError, match="computes channels_first: Grad-CAM of its inner layer"):
        grad_cam(first, data, layer="block_16_project")


def test_segmentation_models_and_bad_formats_are_refused_in_one_line():
    from skinkeras.config import ClsTrainConfig
    from skinkeras.models.deep_unet import build_deep_unet

    with data_format_scope("channels_first"), pytest.raises(ValueError, match="built channels_last only"):
        build_deep_unet(image_size=32, encoder="mobilenetv2", weights=None)
    with pytest.raises(ValueError, match="--data-format must be one of channels_last, channels_first"):
        ClsTrainConfig(data_format="nchw").check()


@pytest.mark.backend
def test_channels_first_runs_or_is_refused_in_one_line_on_each_backend():
    """torch and JAX compute NCHW convolutions on a CPU; TensorFlow's CPU kernels are NHWC only (measured:
    UnimplementedError at the first one), so there the build is refused before anything runs."""
    from skinkeras.backend_config import data_format_unsupported

    if data_format_unsupported("channels_first"):
        assert keras.backend.backend() == "tensorflow"
        with data_format_scope("channels_first"), pytest.raises(ValueError, match="channels_first on TensorFlow"):
            build_encoder("mobilenetv2", (32, 32, 3))
        return
    assert_same_map("mobilenetv2")
