"""A segmentation model saved under one backend loads and predicts the same (1e-4) under the others."""

import numpy as np
import pytest

from conftest import installed_backends
from cross_backend import payload

COMMON = """
import sys, numpy as np, keras
import skinkeras.layers
from skinkeras.models.contract import export_model
from skinkeras.models.deep_unet import build_deep_unet
folder = sys.argv[1]
def build():
    keras.utils.set_random_seed(0)
    return export_model(build_deep_unet(image_size=64, encoder="mobilenetv2", weights=None,
                                                    decoder_filters=(32, 16, 16, 8, 8), aspp_filters=16))
def predict(model, name):
    np.save(f"{folder}/{name}_{keras.backend.backend()}.npy", model.predict(np.load(f"{folder}/x.npy"), verbose=0))
def load(name):
    predict(keras.models.load_model(f"{folder}/{name}.keras", compile=False), name)
"""

# Model A (torch): BatchNorm statistics set away from (0, 1), as after training; an untrained net in
# inference mode outputs ~0.5 everywhere, which would make the comparison meaningless.
SAVE_A = """
model = build()
rng = np.random.default_rng(1)
for w in model.weights:
    if "moving_variance" in w.path:
        w.assign(rng.uniform(0.05, 0.2, w.shape).astype("float32"))
    elif "moving_mean" in w.path:
        w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
np.save(f"{folder}/x.npy", np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32"))
model.save_weights(f"{folder}/A.weights.h5")
model.save(f"{folder}/A.keras")
predict(model, "A")
"""

# Model B (jax): the same model rebuilt under JAX from A's weights, then saved by JAX.
SAVE_B = """
model = build()
model.load_weights(f"{folder}/A.weights.h5")
model.save(f"{folder}/B.keras")
predict(model, "B")
"""


def code(folder, *parts):
    return f"import sys; sys.argv = ['x', {folder!r}]\n" + COMMON + "\n".join(parts)


@payload
def plan(folder, backends):
    """The interpreters of the test below, in order (run with the other cross-backend tests')."""
    if not {"jax", "torch"} <= set(backends):
        return []
    steps = [("torch", code(folder, SAVE_A)), ("jax", code(folder, SAVE_B, "load('A')"))]
    if "tensorflow" in backends:
        steps.append(("tensorflow", code(folder, "load('A')", "load('B')")))
    return steps + [("torch", code(folder, "load('B')"))]


def test_saved_model_predicts_the_same_on_every_backend(cross_backend_runs):
    backends = installed_backends()
    if not {"jax", "torch"} <= set(backends):
        pytest.skip("needs the jax and torch backends")
    tmp_path = cross_backend_runs(__name__)  # the folder `plan` filled (raises if a step failed)

    reference = np.load(tmp_path / "A_torch.npy")
    assert reference.std() > 1e-3, "the model should not predict a constant"
    np.testing.assert_allclose(np.load(tmp_path / "B_jax.npy"), reference, atol=1e-4)
    for name, saver in (("A", "torch"), ("B", "jax")):
        for loader in backends:
            if loader != saver:
                np.testing.assert_allclose(np.load(tmp_path / f"{name}_{loader}.npy"), reference, atol=1e-4,
                                           err_msg=f"saved under {saver}, loaded under {loader}")
