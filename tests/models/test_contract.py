"""Models carry their contract; the registry builds every architecture from a config; old files still load."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import skinkeras
from skinkeras.config import ClsTrainConfig, SegTrainConfig
from skinkeras.models.contract import (
    CLASSIFICATION,
    LOGITS,
    METADATA,
    METADATA_MASK,
    ORIGINAL,
    SEGMENTATION,
    SEGMENTED,
    SkinModel,
    contract_of,
)
from skinkeras.models.registry import architectures, build_model, get_architecture

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "fixtures" / "legacy"
TINY_CLS = dict(encoder="mobilenetv2", weights="none", image_size=32, num_heads=2, key_dim=8, ffn_dim=16,
                projection_dim=16, head_units=[16], tabular_units=[8, 16], vit_patch_size=8, vit_dim=16, vit_depth=2,
                vit_heads=2, vit_mlp_dim=32)


def batch_norms(model):
    """Every BatchNormalization layer of a model, inside nested models and custom layers too."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("arch", ["tdbn", "tdbn_no_meta", "original_only", "segmented_only", "mobilenetv2", "vit"])
def test_classifier_contract_from_registry(arch):
    spec = get_architecture(arch, CLASSIFICATION)
    cfg = ClsTrainConfig(arch=arch, **TINY_CLS)
    model = build_model(cfg, num_classes=5, **({"num_features": 12} if spec.needs_metadata else {}))
    contract = contract_of(model)
    assert isinstance(model, SkinModel) and contract.arch == arch and contract.task == CLASSIFICATION
    assert set(contract.inputs) == set(spec.inputs) == {t.name for t in model.inputs}
    assert model.get_layer(contract.logits).output.shape[-1] == 5
    branches = {t.name: t for t in contract.targets}
    assert set(branches) == set(spec.inputs) & {ORIGINAL, SEGMENTED}
    for target in contract.targets:
        model.get_layer(target.layer)  # every target names a layer of the model
        assert target.tokens == (arch == "vit")
    # Only the dual variants feed the segmented tokens to the attention as keys alone.
    assert [t.keys_only for t in contract.targets if t.name == SEGMENTED] == (
        [True] if arch in ("tdbn", "tdbn_no_meta") else [False] if SEGMENTED in branches else [])
    # The config's sizes reach the builder (they could not before the registry).
    if arch in ("tdbn", "tdbn_no_meta"):
        assert model.get_layer("vision_projection_dense").units == 16
        assert model.get_layer("cross_attention").ffn_dim == 16
    assert model.get_layer("head0_dense").units == 16


def test_segmentation_registry_and_unknown_names():
    assert set(architectures(SEGMENTATION)) == {"deep_unet", "unet", "unetpp", "deeplabv3plus"}
    cfg = SegTrainConfig(encoder="mobilenetv2", weights="none", image_size=32, decoder_filters=[16, 8, 8, 8, 8],
                         aspp_filters=8, aspp_rates=[1, 2])
    model = build_model(cfg)
    assert contract_of(model).task == SEGMENTATION and set(model.output) == {"mask", "aux1", "aux2"}
    assert model.get_layer("aspp").rates == (1, 2)
    with pytest.raises(ValueError, match="valid: deep_unet, unet, unetpp, deeplabv3plus"):
        get_architecture("segformer", SEGMENTATION)
    with pytest.raises(ValueError, match="Unknown classification model 'deep_unet'; valid: tdbn"):
        ClsTrainConfig(arch="deep_unet")


@pytest.mark.backend
def test_reloaded_tdbn_keeps_contract_and_momentum_everywhere(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(ClsTrainConfig(**TINY_CLS), num_classes=7, num_features=12)
    norms = batch_norms(model)
    # the encoders' own layers, the projections and head, and the BatchNorms inside TabularEmbedding
    assert len(norms) > 50 and {bn.momentum for bn in norms} == {0.9}
    model.save(tmp_path / "m.keras")
    restored = skinkeras.load_model(tmp_path / "m.keras")
    assert contract_of(restored) == contract_of(model)
    assert len(batch_norms(restored)) == len(norms) and {bn.momentum for bn in batch_norms(restored)} == {0.9}


def _legacy_inputs(name):
    stored = np.load(LEGACY / f"legacy_{name}_io.npz")
    inputs = {k[3:]: stored[k] for k in stored.files if k.startswith("in/")}
    return (inputs["image"] if name == "seg" else inputs), stored["out"]


@pytest.mark.backend
@pytest.mark.parametrize("name", ["seg", "tdbn", "vit"])
def test_files_of_the_previous_main_load_and_predict_the_same(name):
    model = skinkeras.load_model(LEGACY / f"legacy_{name}.keras")
    inputs, expected = _legacy_inputs(name)
    np.testing.assert_allclose(np.asarray(model.predict(inputs, verbose=0)), expected, atol=1e-5)
    contract = contract_of(model)  # read off the old layer names
    if name == "seg":
        assert contract.task == SEGMENTATION
    else:
        assert contract.logits == LOGITS and model.get_layer(contract.logits)
        expected_targets = {"tdbn": {ORIGINAL: False, SEGMENTED: True}, "vit": {ORIGINAL: False}}[name]
        assert {t.name: t.keys_only for t in contract.targets} == expected_targets
        if name == "tdbn":
            assert set(contract.inputs) == {ORIGINAL, SEGMENTED, METADATA, METADATA_MASK}


def test_import_skinkeras_is_enough_to_load_files(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "new.keras"
    build_model(ClsTrainConfig(arch="tdbn", **TINY_CLS), num_classes=3, num_features=12).save(path)
    code = ("import sys, keras, skinkeras\n"
            "for p in sys.argv[1:]:\n"
            "    m = keras.saving.load_model(p)\n"
            "    print(type(m).__name__, skinkeras.contract_of(m).task)\n")
    files = [path, LEGACY / "legacy_seg.keras", LEGACY / "legacy_tdbn.keras"]
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:3] == ["SkinModel classification", "Functional segmentation",
                                          "Functional classification"]
