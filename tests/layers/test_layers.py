"""Every custom layer: output shape, values, config round-trip and .keras save/load (per backend)."""

import keras
import numpy as np
import pytest

from skinkeras.layers import ASPP, DepthwiseAttentionGate, EncoderPreprocess, SeparableDoubleConv

pytestmark = pytest.mark.backend


def roundtrip(model, inputs, tmp_path):
    """Saves and reloads `model`; returns (original outputs, reloaded outputs, reloaded model)."""
    before = model.predict(inputs, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    return before, restored.predict(inputs, verbose=0), restored


def check_config(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


def bn_momenta(layer):
    """Momentum of every BatchNormalization inside `layer`, in walk order."""
    return [sub.momentum for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]


CASES = [
    ("aspp", lambda: ASPP(8, rates=(1, 2, 3), dropout=0.1, bn_momentum=0.9), [(2, 8, 8, 5)], (2, 8, 8, 8)),
    ("double_conv", lambda: SeparableDoubleConv(6, bn_momentum=0.9), [(2, 8, 8, 4)], (2, 8, 8, 6)),
    ("dag", lambda: DepthwiseAttentionGate(6, inter_filters=3, bn_momentum=0.9), [(2, 8, 8, 5), (2, 8, 8, 7)],
     (2, 8, 8, 6)),
]
# BatchNormalization sublayers of each case: ASPP 1x1 + three atrous branches + fuse; two convs; dsc + psi.
BN_COUNT = {"aspp": 5, "double_conv": 2, "dag": 2}


@pytest.mark.parametrize("name,make,shapes,expected", CASES, ids=[c[0] for c in CASES])
def test_layer_shape_config_and_save(name, make, shapes, expected, tmp_path):
    keras.utils.set_random_seed(0)
    layer = make()
    inputs = [keras.Input(s[1:]) for s in shapes]
    x = inputs if len(inputs) > 1 else inputs[0]
    output = layer(x)
    assert tuple(output.shape[1:]) == expected[1:]
    assert tuple(layer.compute_output_shape([(None, *s[1:]) for s in shapes] if len(shapes) > 1
                                            else (None, *shapes[0][1:])))[1:] == expected[1:]
    assert bn_momenta(layer) == [0.9] * BN_COUNT[name]
    clone = check_config(layer)
    assert clone.get_config()["bn_momentum"] == 0.9 and bn_momenta(clone) == [0.9] * BN_COUNT[name]
    model = keras.Model(inputs, output)
    data = [np.random.default_rng(i).normal(size=s).astype("float32") for i, s in enumerate(shapes)]
    before, after, restored = roundtrip(model, data if len(data) > 1 else data[0], tmp_path)
    assert before.shape == expected
    np.testing.assert_allclose(before, after, atol=1e-5)
    reloaded = restored.get_layer(layer.name)
    assert reloaded.bn_momentum == 0.9 and bn_momenta(reloaded) == [0.9] * BN_COUNT[name]


@pytest.mark.parametrize("name,make,shapes,expected", CASES, ids=[c[0] for c in CASES])
def test_config_without_bn_momentum_keeps_keras_default(name, make, shapes, expected):
    # Configs saved before `bn_momentum` existed lack the key: they must build exactly as before (0.99).
    config = make().get_config()
    del config["bn_momentum"]
    layer = make().__class__.from_config(config)
    assert layer.bn_momentum == 0.99 and bn_momenta(layer) == [0.99] * BN_COUNT[name]


def test_aspp_branches_see_different_context():
    # Dilation makes the rate-3 branch see a pixel three steps away; rate 1 alone would not.
    keras.utils.set_random_seed(1)
    far = ASPP(4, rates=(3,))
    near = ASPP(4, rates=(1,))
    x = np.zeros((1, 9, 9, 1), "float32")
    x[0, 1, 1, 0] = 10.0
    for layer in (far, near):
        layer.build(x.shape)
    centre_far = far.branches[1](x, training=False)[0, 4, 4]
    centre_near = near.branches[1](x, training=False)[0, 4, 4]
    zero_far = far.branches[1](np.zeros_like(x), training=False)[0, 4, 4]
    zero_near = near.branches[1](np.zeros_like(x), training=False)[0, 4, 4]
    assert not np.allclose(keras.ops.convert_to_numpy(centre_far), keras.ops.convert_to_numpy(zero_far))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(centre_near), keras.ops.convert_to_numpy(zero_near))


def test_attention_gate_output_is_refined_skip_times_mask():
    keras.utils.set_random_seed(2)
    gate = DepthwiseAttentionGate(4)
    skip = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    g = np.random.default_rng(1).normal(size=(2, 6, 6, 5)).astype("float32")
    out = keras.ops.convert_to_numpy(gate([skip, g], training=False))
    refined, mask = (keras.ops.convert_to_numpy(t) for t in gate.attention_mask([skip, g], training=False))
    assert mask.shape == (2, 6, 6, 1)
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    np.testing.assert_allclose(out, refined * mask, atol=1e-6)
    # The gate depends on the decoder signal: another gating input changes the mask.
    _, other = gate.attention_mask([skip, g * -3.0], training=False)
    assert not np.allclose(mask, keras.ops.convert_to_numpy(other))


@pytest.mark.parametrize(
    "mode,reference",
    [
        ("torch", keras.applications.densenet.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("raw", lambda x: x),
    ],
)
def test_encoder_preprocess_matches_keras_applications(mode, reference, tmp_path):
    x = np.random.default_rng(3).uniform(0, 255, size=(2, 5, 5, 3)).astype("float32")
    layer = EncoderPreprocess(mode)
    expected = np.asarray(reference(x.copy()))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-4)
    check_config(layer)
    inp = keras.Input((5, 5, 3))
    before, after, _ = roundtrip(keras.Model(inp, layer(inp)), x, tmp_path)
    np.testing.assert_allclose(before, after)


def test_encoder_preprocess_rejects_unknown_mode():
    with pytest.raises(ValueError, match="valid: raw, tf, torch, caffe"):
        EncoderPreprocess("imagenet")
