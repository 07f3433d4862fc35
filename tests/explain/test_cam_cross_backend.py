"""The same saved TDBN gives the same CAMs (max |difference| < 1e-3 after normalisation) on JAX, TF and torch."""

import numpy as np
import pytest

from conftest import installed_backends
from cross_backend import payload

CODE = """
import sys, numpy as np, keras
import skinkeras.layers  # registers the custom layers for loading
sys.path.insert(0, "tests/explain")
from cam_fixtures import calibrated_tdbn, cam_inputs
from skinkeras.explain.gradcam import grad_cam, upsample_cams
folder, save = sys.argv[1], sys.argv[2] == "save"
inputs = cam_inputs()
if save:
    calibrated_tdbn().save(f"{folder}/tdbn.keras")
model = keras.models.load_model(f"{folder}/tdbn.keras", compile=False)
out = {}
for method in ("gradcam", "layercam"):
    result = grad_cam(model, inputs, class_index=[0, 3, 6, 1, 2, 5], method=method)
    out["probabilities"] = result.probabilities
    for branch, raw in result.raw.items():
        out[f"{method}_{branch}"] = upsample_cams(raw, (64, 64))
        out[f"{method}_{branch}_degenerate"] = result.degenerate[branch]
np.savez(f"{folder}/cams_{keras.backend.backend()}.npz", **out)
"""


def saver_of(backends):
    return "torch" if "torch" in backends else backends[0]


@payload
def plan(folder, backends):
    """The interpreters of the test below, in order (run with the other cross-backend tests')."""
    if len(backends) < 2:
        return []
    saver = saver_of(backends)
    steps = [(saver, f"import sys; sys.argv = ['x', {folder!r}, 'save']\n" + CODE)]
    for backend in backends:
        if backend != saver:
            steps.append((backend, f"import sys; sys.argv = ['x', {folder!r}, 'load']\n" + CODE))
    return steps


def test_cams_agree_across_backends(cross_backend_runs):
    backends = installed_backends()
    if len(backends) < 2:
        pytest.skip("needs two backends")
    saver = saver_of(backends)
    tmp_path = cross_backend_runs(__name__)  # the folder `plan` filled (raises if a step failed)

    reference = dict(np.load(tmp_path / f"cams_{saver}.npz"))
    # Non-trivial maps: the original branch's Grad-CAM and both branches' LayerCAM peak at 1 on most images.
    for key in ("gradcam_original", "layercam_original", "layercam_segmented"):
        assert np.isclose(reference[key].max(axis=(1, 2)), 1.0).sum() >= 4, key
        assert reference[key].std() > 0.05, key
    assert reference["gradcam_segmented_degenerate"].all()
    for backend in backends:
        if backend == saver:
            continue
        other = dict(np.load(tmp_path / f"cams_{backend}.npz"))
        np.testing.assert_allclose(other["probabilities"], reference["probabilities"], atol=1e-4)
        for key, value in reference.items():
            if key.endswith("_degenerate"):
                np.testing.assert_array_equal(other[key], value, err_msg=f"{key} under {backend}")
            elif key != "probabilities":
                assert np.abs(other[key] - value).max() < 1e-3, f"{key}: {backend} vs {saver}"
