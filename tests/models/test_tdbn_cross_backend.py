"""The full TDBN (dual encoders, cross-attention, metadata, fusion) saved under one backend loads and predicts
the same (1e-4) under the others, probabilities and logits both."""

import numpy as np
import pytest

from conftest import installed_backends
from cross_backend import payload

COMMON = """
import sys, numpy as np, keras
import skinkeras.layers
from skinkeras.models.tdbn import build_tdbn
folder = sys.argv[1]
def build():
    keras.utils.set_random_seed(0)
    return build_tdbn(7, image_size=64, encoder="mobilenetv2", weights=None, variant="tdbn", num_features=12)
def inputs():
    return {k: v for k, v in np.load(f"{folder}/x.npz").items()}
def predict(model, name):
    x = inputs()
    x = {k: x[k] for k in model.input}
    logits = keras.Model(model.input, model.get_layer("logits").output)
    out = f"{folder}/{name}_{keras.backend.backend()}"
    np.save(out + "_probs.npy", model.predict(x, verbose=0))
    np.save(out + "_logits.npy", logits.predict(x, verbose=0))
def load(name):
    predict(keras.models.load_model(f"{folder}/{name}.keras", compile=False), name)
"""

# Model A (torch): BatchNorm statistics set away from (0, 1), as after training: those of a calibration batch
# (one training-mode pass with momentum 0). A fresh MobileNetV2 in inference mode shrinks its features to ~0,
# so every image would get the same scores; random statistics saturate the softmax. The inputs: two 0-255
# images per sample, a 12-wide metadata vector and a mask with zeros (samples without metadata).
SAVE_A = """
model = build()
rng = np.random.default_rng(0)
def batch(n, mask):
    return dict(original=rng.uniform(0, 255, (n, 64, 64, 3)).astype("float32"),
                segmented=rng.uniform(0, 255, (n, 64, 64, 3)).astype("float32"),
                metadata=rng.normal(0, 1, (n, 12)).astype("float32"),
                metadata_mask=np.array(mask, "float32").reshape(n, 1))
bns = [l for l in model._flatten_layers(include_self=False) if isinstance(l, keras.layers.BatchNormalization)]
for layer in bns:
    layer.momentum = 0.0
model(batch(8, [1, 1, 0, 1, 1, 1, 0, 1]), training=True)
for layer in bns:
    layer.momentum = 0.99
np.savez(f"{folder}/x.npz", **batch(6, [1, 0, 1, 1, 0, 1]))
model.save_weights(f"{folder}/A.weights.h5")
model.save(f"{folder}/A.keras")
predict(model, "A_saving")
"""

# Model B (jax): the same model rebuilt under JAX from A's weights, then saved by JAX.
SAVE_B = """
model = build()
model.load_weights(f"{folder}/A.weights.h5")
model.save(f"{folder}/B.keras")
predict(model, "B_saving")
"""


def code(folder, *parts):
    return f"import sys; sys.argv = ['x', {folder!r}]\n" + COMMON + "\n".join(parts)


@payload
def plan(folder, backends):
    """The interpreters of the test below, in order (run with the other cross-backend tests')."""
    if not {"jax", "torch"} <= set(backends):
        return []
    steps = [("torch", code(folder, SAVE_A)), ("jax", code(folder, SAVE_B, "load('A')", "load('B')"))]
    if "tensorflow" in backends:
        steps.append(("tensorflow", code(folder, "load('A')", "load('B')")))
    return steps + [("torch", code(folder, "load('A')", "load('B')"))]


def test_saved_tdbn_predicts_the_same_on_every_backend(cross_backend_runs):
    backends = installed_backends()
    if not {"jax", "torch"} <= set(backends):
        pytest.skip("needs the jax and torch backends")
    tmp_path = cross_backend_runs(__name__)  # the folder `plan` filled (raises if a step failed)

    for output in ("probs", "logits"):
        reference = np.load(tmp_path / f"A_saving_torch_{output}.npy")
        assert reference.shape == (6, 7)
        # Each sample gets its own scores (a constant output would make the comparison meaningless), and samples
        # 1 and 4, which have no metadata (mask 0), differ through the image branches alone.
        assert reference.std(axis=0).min() > 1e-3, f"{output} hardly depend on the inputs:\n{reference}"
        assert np.abs(reference[1] - reference[4]).max() > 1e-3, f"{output} ignore the images:\n{reference}"
        # 1e-4 of the output's range: absolute for the probabilities, relative to the largest logit (~5 here,
        # where float32 rounding through ~150 layers already differs by ~8e-5 between backends).
        atol = 1e-4 * max(1.0, float(np.abs(reference).max()))
        np.testing.assert_allclose(np.load(tmp_path / f"B_saving_jax_{output}.npy"), reference, atol=atol,
                                   err_msg=f"{output}: rebuilt under jax from torch's weights")
        for name, saver in (("A", "torch"), ("B", "jax")):
            for loader in backends:
                np.testing.assert_allclose(np.load(tmp_path / f"{name}_{loader}_{output}.npy"), reference,
                                           atol=atol, err_msg=f"{output}: saved under {saver}, loaded under {loader}")
