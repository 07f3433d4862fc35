"""Mixed precision: bf16 / fp16 policies, float32 outputs and losses, loss scaling, rebuilt models' predictions."""

import keras
import numpy as np
import pytest

import skinkeras.layers  # noqa: F401  (registers the custom layers)
from skinkeras.config import ClsTrainConfig, SegTrainConfig
from skinkeras.losses import BCEDiceLoss
from skinkeras.models.contract import MASK, PROBABILITIES
from skinkeras.precision import policy_name, precision_of, precision_scope, with_precision

HALF = ("bf16", "fp16")
TOY_VIT = dict(vit_patch_size=8, vit_dim=16, vit_depth=1, vit_heads=2, vit_mlp_dim=32, head_units=[8])


def _cls_inputs(model, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {t.name: (rng.uniform(0, 255, (n, *t.shape[1:])) if len(t.shape) == 4
                     else rng.integers(0, 2, (n, *t.shape[1:]))).astype("float32") for t in model.inputs}


def _trained_like(model, seed=1):
    """BatchNorm statistics away from (0, 1), as after training: an untrained net in inference mode outputs ~0.5
    everywhere, and any precision would pass a comparison of those."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.05, 0.2, w.shape).astype("float32"))
        elif "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


@pytest.mark.backend
def test_bce_dice_stays_float32_where_an_fp16_sum_overflows():
    """A Dice sum over 224x224 overflows fp16 (max 65504); the loss computes in float32 on fp16 outputs."""
    rng = np.random.default_rng(0)
    truth = np.ones((2, 224, 224, 1), "float32")
    prob = rng.uniform(0.6, 0.99, truth.shape).astype("float16")
    naive = keras.ops.sum(keras.ops.convert_to_tensor(truth, "float16") + keras.ops.convert_to_tensor(prob))
    assert not np.isfinite(float(keras.ops.convert_to_numpy(naive)))  # what the loss must avoid
    loss = BCEDiceLoss()
    half = float(keras.ops.convert_to_numpy(loss(truth, keras.ops.convert_to_tensor(prob))))
    full = float(keras.ops.convert_to_numpy(loss(truth, prob.astype("float32"))))
    assert np.isfinite(half) and half == pytest.approx(full, rel=1e-5)


@pytest.mark.backend
@pytest.mark.parametrize("precision", HALF)
def test_half_precision_training_step_is_finite_with_float32_outputs(precision):
    """One bf16 and one fp16 step through the classifier builders and compile on every backend (the toy ViT
    baseline: the encoder classifiers compile for minutes in low precision under XLA on a CPU)."""
    from skinkeras.classification.train import compile_classifier
    from skinkeras.models.registry import build_model

    from skinkeras.backend_config import precision_unsupported

    if precision_unsupported(precision):  # fp16 under JAX on a CPU: refused in one line before any data is read
        with pytest.raises(ValueError, match="fp16 on JAX needs a GPU"):
            ClsTrainConfig(arch="vit", weights="none", image_size=32, precision=precision, **TOY_VIT)
        with pytest.raises(ValueError, match="fp16 on JAX needs a GPU"), precision_scope(precision):
            pass
        return
    keras.utils.set_random_seed(0)
    cfg = ClsTrainConfig(arch="vit", weights="none", image_size=32, precision=precision, **TOY_VIT)
    with precision_scope(precision):
        model = build_model(cfg, num_classes=3)
    assert keras.config.dtype_policy().name == "float32"  # the scope restores the global policy
    assert precision_of(model) == precision
    assert model.get_layer(PROBABILITIES).compute_dtype == "float32"
    compute = {layer.compute_dtype for layer in model.layers if layer.weights and layer.name != PROBABILITIES}
    assert compute == {"bfloat16" if precision == "bf16" else "float16"}
    compile_classifier(model, cfg, 3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "fp16")
    inputs = _cls_inputs(model)
    before = [np.array(keras.ops.convert_to_numpy(w), copy=True) for w in model.weights]
    logs = model.train_on_batch(inputs, np.array([0, 1, 2, 1]), return_dict=True)
    assert np.isfinite(logs["loss"])
    after = [keras.ops.convert_to_numpy(w) for w in model.weights]
    assert all(w.dtype == np.float32 for w in after)  # variables stay float32
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # the step applied an update
    probs = keras.ops.convert_to_numpy(model(inputs, training=False))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def _tiny_deep_unet():
    from skinkeras.models.contract import export_model
    from skinkeras.models.deep_unet import build_deep_unet

    keras.utils.set_random_seed(0)
    return build_deep_unet(image_size=64, encoder="mobilenetv2", weights=None, decoder_filters=(32, 16, 16, 8, 8),
                           aspp_filters=16), export_model


def test_with_precision_rebuilds_with_the_same_weights_and_float32_outputs():
    """bf16 / fp16 copies of a model: the same weights, float32 masks, predictions within a stated tolerance of
    fp32; back to fp32 gives the original predictions exactly."""
    train_model, export = _tiny_deep_unet()
    model = _trained_like(export(train_model))
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    reference = model.predict(x, verbose=0)
    assert 0.01 < reference.std()  # not the flat ~0.5 of an untrained net
    # Tolerances (max absolute probability difference): bf16 keeps 8 bits of mantissa, fp16 11.
    tolerance = {"bf16": 0.1, "fp16": 0.01}
    for precision in HALF:
        half = with_precision(model, precision)
        assert precision_of(half) == precision and precision_of(model) == "fp32"
        assert half.get_layer(MASK).compute_dtype == "float32"
        assert {w.dtype for w in half.weights} == {"float32"}
        for a, b in zip(model.get_weights(), half.get_weights()):
            np.testing.assert_array_equal(a, b)
        pred = half.predict(x, verbose=0)
        assert pred.dtype == np.float32
        diff = np.abs(pred - reference).max()
        assert 0 < diff < tolerance[precision], (precision, diff)
        back = with_precision(half, "fp32")
        np.testing.assert_allclose(back.predict(x, verbose=0), reference, atol=1e-6)
    assert with_precision(model, "fp32") is model
    with pytest.raises(ValueError, match="valid: fp32, bf16, fp16"):
        policy_name("int8")


@pytest.mark.parametrize("precision", HALF)
def test_half_precision_steps_of_the_paper_models_on_torch(precision):
    """The Deep-UNet (BCE + Dice, deep supervision) and the TDBN (cross-attention, metadata) train in bf16 and
    fp16 with finite losses (torch: the encoders' low-precision compiles under XLA take minutes on a CPU)."""
    from skinkeras.classification.train import compile_classifier
    from skinkeras.models.tdbn import build_tdbn
    from skinkeras.segmentation.train import compile_segmentation

    rng = np.random.default_rng(0)
    with precision_scope(precision):
        seg, _ = _tiny_deep_unet()
        keras.utils.set_random_seed(0)
        tdbn = build_tdbn(3, image_size=64, encoder="mobilenetv2", weights=None, num_features=5, num_heads=2,
                          ffn_dim=16, head_units=(8,), tabular_units=(8, 16), projection_dim=16)
    compile_segmentation(seg, SegTrainConfig(arch="deep_unet", encoder="mobilenetv2", weights="none", image_size=64))
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    y = {name: rng.integers(0, 2, (2, *t.shape[1:])).astype("float32") for name, t in seg.output.items()}
    logs = seg.train_on_batch(x, y, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    compile_classifier(tdbn, ClsTrainConfig(arch="tdbn", encoder="mobilenetv2", weights="none", image_size=64), 3)
    assert precision_of(tdbn) == precision
    logs = tdbn.train_on_batch(_cls_inputs(tdbn), np.array([0, 1, 2, 1]), return_dict=True)
    assert np.isfinite(logs["loss"])
