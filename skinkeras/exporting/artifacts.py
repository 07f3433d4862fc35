"""Export a trained model of this project to a deployable artifact, with its contract and a parity check.

`model.export(format=...)` (Keras 3) writes the artifact; this module adds what a user of the artifact needs and
the proof that it computes what the Keras model computes:

- `model.json` beside the artifact: input names, shapes, dtypes and value range, the output, the class names,
  the metadata encoding, the calibration temperature and referral thresholds of the run, the source run and
  git commit, and the parity result;
- the parity check: the artifact run by its own runtime (`skinkeras.exporting.runtimes`) against the Keras
  model on N images; the largest absolute difference is recorded, and above the tolerance the export fails.
"""

import os
import shutil
from dataclasses import dataclass

import numpy as np

from skinkeras import runs
from skinkeras.names import CLASSIFICATION, IMAGE_INPUTS, METADATA, METADATA_MASK

MODEL_JSON = "model.json"
# Largest absolute difference of the main output (probabilities, or lesion probabilities) that passes.
TOLERANCE = 1e-4
PARITY_IMAGES = 4


@dataclass(frozen=True)
class ArtifactFormat:
    """One export format.

    Args:
        name: the `model.export` format name.
        filename: the artifact's name inside the output folder.
        runtime: what runs it in the parity check and in `serve`.
        backends: the Keras backends whose exporter writes it.
        why_not: per other backend, why it cannot.
    """

    name: str
    filename: str
    runtime: str
    backends: tuple
    why_not: dict


FORMATS = {
    "onnx": ArtifactFormat("onnx", "model.onnx", "onnxruntime", ("tensorflow", "torch", "jax"), {}),
    "tf_saved_model": ArtifactFormat(
        "tf_saved_model", "saved_model", "TensorFlow (tf.saved_model.load)", ("tensorflow", "jax"),
        {"torch": "Keras writes a SavedModel from the TensorFlow and JAX backends only"}),
    "litert": ArtifactFormat(
        "litert", "model.tflite", "LiteRT interpreter (tf.lite.Interpreter)", ("tensorflow",),
        {"jax": "Keras converts to LiteRT from the TensorFlow backend (and torch with litert-torch), not JAX",
         "torch": "Keras converts to LiteRT on torch through the litert-torch package, which is not installed"}),
    "torch": ArtifactFormat(
        "torch", "model.pt2", "torch.export", ("torch",),
        {"jax": "torch.export traces PyTorch modules: use the torch backend",
         "tensorflow": "torch.export traces PyTorch modules: use the torch backend"}),
}


class ExportError(RuntimeError):
    """The format cannot carry the model on this backend, or the artifact's outputs differ from the model's."""


def _root_cause(exc):
    """'Type: first line' of the innermost exception (Keras wraps a layer's failure in its own message)."""
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return f"{exc.__class__.__name__}: {_first_line(exc)}"


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:200]


def model_provenance(model_path):
    """What the model's run folder says about it: classes, metadata encoding, calibration, run, commit.

    Args:
        model_path: the `.keras` file (RUN/best.keras of seg-train or cls-train; a bare file has less).
    """
    from skinkeras.inference import run_calibration

    run_dir = os.path.dirname(os.path.abspath(model_path))
    found = {"model_file": os.path.abspath(model_path), "model_sha256": runs.file_sha256(model_path),
             "run": run_dir if os.path.isfile(os.path.join(run_dir, "config.json")) else None}
    env_path = os.path.join(run_dir, "env.json")
    found["run_commit"] = runs.read_json(env_path).get("git_commit") if os.path.isfile(env_path) else None
    found["export_commit"] = runs.git_commit()
    if found["run"] is None:
        return found
    config = runs.read_json(os.path.join(run_dir, "config.json"))
    found["arch"] = config.get("arch")
    found["encoder"] = config.get("encoder")
    found["dataset"] = config.get("dataset")
    encoder_path = os.path.join(run_dir, "metadata_encoder.json")
    if os.path.isfile(encoder_path):
        from skinkeras.data.sets import dataset_classes

        found["classes"] = list(dataset_classes(config.get("dataset", "ham10000")))
        found["metadata_encoder"] = runs.read_json(encoder_path)
        calibration, note = run_calibration(run_dir, model_path)
        found["calibration_note"] = note
        if calibration:
            found["calibration"] = {
                "temperature": calibration["temperature"],
                "fitted_on": calibration.get("fitted_on"),
                "referral": {"targets": [{k: p.get(k) for k in ("target", "threshold", "coverage", "accuracy")}
                                         for p in calibration.get("referral", {}).get("targets", [])]},
            }
    return found


def parity_inputs(model, contract, count=PARITY_IMAGES, seed=0, images=None, encoder=None):
    """N inputs of the model's shapes: smooth 0-255 images (or `images`) and valid metadata encodings.

    Args:
        model: the Keras model.
        contract: its contract.
        count: number of samples.
        seed: random seed.
        images: optional uint8 (N, H, W, 3) images at the model's size, used for every image input.
        encoder: fitted `MetadataEncoder` (classifiers with metadata): encodes a few (age, sex, site) triples.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}
    inputs = {}
    for name in contract.inputs:
        shape = shapes.get(name) or next(iter(shapes.values()))
        if len(shape) == 3:
            if images is not None:
                batch = np.asarray(images[:count], np.float32)
            else:
                # low-frequency noise: activations in the range real photos give, unlike white noise
                small = rng.uniform(0, 255, (count, 8, 8, 3)).astype(np.uint8)
                batch = np.stack([np.asarray(Image.fromarray(s).resize((shape[1], shape[0]), Image.BICUBIC))
                                  for s in small]).astype(np.float32)
            inputs[name] = batch
    if METADATA in contract.inputs:
        from skinkeras.data.metadata import SITES, sample_availability

        rows = [encoder.encode_one(age, sex, site) for age, sex, site in
                zip([None, 35.0, 70.0, 55.0] * count, [None, "male", "female", "female"] * count,
                    [None, SITES[0], SITES[-1], None] * count)][:count] if encoder is not None else None
        width = shapes[METADATA][0]
        if rows:
            inputs[METADATA] = np.concatenate([r[0] for r in rows]).astype(np.float32)
            inputs[METADATA_MASK] = np.concatenate([sample_availability(r[1]) for r in rows]).astype(np.float32)
        else:
            inputs[METADATA] = rng.normal(size=(count, width)).astype(np.float32)
            inputs[METADATA_MASK] = np.ones((count, shapes[METADATA_MASK][0]), np.float32)
    return {k: v for k, v in inputs.items() if k in contract.inputs}


def folder_images(folder, count, model):
    """The first `count` readable images of a folder (sorted by name), at the model's input size.

    Args:
        folder: a folder of JPEG / PNG images.
        count: how many.
        model: the model (its input size).
    """
    from skinkeras.data.isic2018 import IMAGE_EXTENSIONS
    from skinkeras.data.pipeline import ImageReadError, read_rgb, resize_rgb
    from skinkeras.inference import model_image_size

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--images {folder}: no such folder")
    size = model_image_size(model)
    found = []
    for name in sorted(os.listdir(folder)):
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and len(found) < count:
            try:
                found.append(resize_rgb(read_rgb(os.path.join(folder, name)), size))
            except ImageReadError:
                continue
    if not found:
        raise ValueError(f"--images {folder}: no readable image in it (JPEG or PNG)")
    return np.stack(found)


def export(model, format="onnx", out=None, samples=PARITY_IMAGES, tolerance=TOLERANCE, images=None, seed=0,
           echo=print):
    """Exports a trained model with its model.json and parity check (the API of `python cli.py export`).

    Args:
        model: RUN/best.keras of seg-train or cls-train, or an `ExportConfig`.
        format: onnx | tf_saved_model | litert | torch.
        out: output folder (default: RUN/export-FORMAT beside the model).
        samples: parity inputs.
        tolerance: largest absolute difference that passes.
        images: optional folder of images for the parity check.
        seed: seed of the generated parity inputs.
        echo: printer.

    Returns:
        the model.json dict.
    """
    from skinkeras.config import ExportConfig

    if not isinstance(model, ExportConfig):
        out = out or os.path.join(os.path.dirname(os.path.abspath(model)), f"export-{format}")
        model = ExportConfig(model=os.fspath(model), format=format, out=os.fspath(out), samples=samples,
                             tolerance=tolerance, images=images, seed=seed)
    cfg = model
    return export_model_file(cfg.model, cfg.format, cfg.out, cfg.samples, cfg.tolerance, cfg.images, cfg.seed, echo)


def input_contract(model, contract):
    """The inputs a user of the artifact feeds: names, shapes (batch None), dtype and value range."""
    shapes = {t.name.split(":")[0]: [None, *t.shape[1:]] for t in model.inputs}
    described = []
    for name in contract.inputs:
        entry = {"name": name, "shape": shapes.get(name) or next(iter(shapes.values())), "dtype": "float32"}
        if name in IMAGE_INPUTS or len(entry["shape"]) == 4:
            entry["range"] = [0, 255]
            entry["layout"] = "NHWC RGB; the model scales it itself"
        elif name == METADATA:
            entry["encoding"] = "see metadata_encoder (age z-score, one-hot sex and site)"
        elif name == METADATA_MASK:
            entry["encoding"] = "1 where age, sex, site are known, in that order"
        described.append(entry)
    return described


def export_model_file(model_path, fmt, out, samples=PARITY_IMAGES, tolerance=TOLERANCE, images=None, seed=0,
                      echo=print):
    """Exports a `.keras` model of this project to `fmt` in `out`, writes `model.json` and checks parity.

    Args:
        model_path: RUN/best.keras of seg-train or cls-train (any `.keras` file of this project).
        fmt: onnx | tf_saved_model | litert | torch.
        out: output folder (the artifact and model.json go inside).
        samples: number of parity inputs.
        tolerance: largest absolute difference of the main output that passes.
        images: optional folder of images (JPEG, PNG) for the parity check, resized to the model's input size.
        seed: seed of the generated parity inputs.
        echo: progress printer.

    Returns:
        the model.json dict.

    Raises:
        ExportError: the format cannot carry the model on this backend (one line saying which and why), or the
            parity check failed (model.json is still written, with the difference).
    """
    import keras

    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.exporting.runtimes import export_options, main_output, open_artifact
    from skinkeras.inference import load_model
    from skinkeras.models.contract import contract_of

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    backend = keras.backend.backend()
    model = load_model(model_path)
    contract = contract_of(model)
    what = f"{contract.arch or model.name} ({contract.task})"
    if backend not in spec.backends:
        raise ExportError(f"{fmt} cannot carry {what} on the {backend} backend: {spec.why_not[backend]} "
                          f"(backends that can: {', '.join(spec.backends)})")
    provenance = model_provenance(model_path)
    encoder = MetadataEncoder.from_dict(provenance["metadata_encoder"]) if "metadata_encoder" in provenance else None
    pictures = folder_images(images, samples, model) if images else None
    inputs = parity_inputs(model, contract, len(pictures) if pictures is not None else samples, seed, pictures,
                           encoder)
    samples = len(next(iter(inputs.values())))
    dict_inputs = isinstance(model.input, dict)
    feed = inputs if dict_inputs else inputs[contract.inputs[0]]
    expected = main_output(model(feed, training=False), contract.output)  # Keras exports only a model that was called

    os.makedirs(out, exist_ok=True)
    artifact = os.path.join(out, spec.filename)
    if os.path.isdir(artifact):
        shutil.rmtree(artifact)
    elif os.path.exists(artifact):
        os.remove(artifact)
    echo(f"Exporting {what} from {model_path} as {fmt} on the {backend} backend ...")
    _exportable(model, fmt)  # after `expected`: parity holds the artifact to the model as it was trained
    try:
        model.export(artifact, format=fmt, verbose=False, **export_options(fmt, model))
    except Exception as exc:  # each exporter raises its own types; the user gets the root cause's first line
        raise ExportError(f"{fmt} cannot carry {what} on the {backend} backend: {_root_cause(exc)}") from None
    try:
        got = open_artifact(artifact, fmt, contract.inputs, dict_inputs=dict_inputs)(inputs)
    except Exception as exc:
        raise ExportError(f"the {fmt} artifact {artifact} was written but {spec.runtime} cannot run it: "
                          f"{exc.__class__.__name__}: {_first_line(exc)}") from None
    diff = float(np.max(np.abs(got.reshape(expected.shape) - expected))) if got.size == expected.size else float("inf")
    sidecar = {
        "format": fmt,
        "artifact": spec.filename,
        "runtime": spec.runtime,
        "exported_with": {"backend": backend, "keras": keras.__version__},
        "task": contract.task,
        "arch": contract.arch,
        "contract": contract.to_dict(),
        "inputs": input_contract(model, contract),
        "input_structure": "dict" if dict_inputs else "tensor",
        "output": {"name": contract.output, "shape": [None, *expected.shape[1:]], "dtype": "float32",
                   "meaning": ("class probabilities (softmax), before the run's temperature"
                               if contract.task == CLASSIFICATION else "lesion probability per pixel; mask = p > 0.5")},
        **provenance,
        "environment": runs.environment(seed),
        "parity": {"images": int(samples), "max_abs_diff": diff, "tolerance": float(tolerance),
                   "passed": bool(diff <= tolerance), "inputs": f"images of {images}" if images else
                   f"generated (seed {seed}): smooth 0-255 images{' and encoded metadata' if encoder else ''}"},
    }
    runs.write_json(os.path.join(out, MODEL_JSON), sidecar)
    if not diff <= tolerance:
        raise ExportError(f"parity check failed: the {fmt} artifact differs from the Keras model by {diff:.3g} "
                          f"(> {tolerance:g}) on {samples} inputs; see {os.path.join(out, MODEL_JSON)}")
    echo(f"Wrote {artifact} and {MODEL_JSON}: parity {diff:.2e} <= {tolerance:g} on {samples} inputs "
         f"({spec.runtime} against Keras)")
    return sidecar


def _erf_gelu(x):
    import keras

    return 0.5 * x * (1.0 + keras.ops.erf(x * 0.7071067811865476))


def layers_within(model):
    """Every layer inside `model`, once each: nested models' layers and the sublayers custom layers hold.

    Args:
        model: a Keras model or layer.
    """
    import keras

    seen, stack = set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer is not model:
            yield layer
        children = list(getattr(layer, "layers", None) or ())
        for value in vars(layer).values():
            if isinstance(value, keras.layers.Layer):
                children.append(value)
            elif isinstance(value, (list, tuple)):
                children.extend(v for v in value if isinstance(v, keras.layers.Layer))
        stack.extend(reversed(children))


def _exportable(model, fmt):
    """The model with what exporters mis-convert rewritten as the same values in plainer operations.

    - Each Normalization layer's mean and variance are held as NumPy arrays. Keras computes them as backend
      tensors when the layer is built, so a traced TensorFlow function captures them as inputs, and tf2onnx
      leaves those as graph inputs nobody feeds (measured on the EfficientNet encoders: "Required inputs
      ([...normalization/Sub/y:0, ...Sqrt/x:0]) are missing"). Arrays become constants of the graph.
    - For ONNX, exact GELU (the ViT's MLP) is written with erf: TensorFlow computes it with erfc, which tf2onnx
      copies into the ONNX graph as an `Erfc` node, an operator ONNX does not have (measured: onnxruntime
      "INVALID_GRAPH ... Erfc"). Only for ONNX: JAX lowers `erf` to a StableHLO composite that TensorFlow's
      SavedModel runtime cannot read (measured: "unregistered operation 'vhlo.composite_v2'").

    Args:
        model: a loaded model (changed in place; it is the export's own copy).
        fmt: the format it is exported to.
    """
    import keras

    gelu = keras.activations.gelu
    for layer in layers_within(model):
        if isinstance(layer, keras.layers.Normalization) and getattr(layer, "mean", None) is not None:
            layer.mean = np.asarray(keras.ops.convert_to_numpy(layer.mean))
            layer.variance = np.asarray(keras.ops.convert_to_numpy(layer.variance))
        if fmt == "onnx" and getattr(layer, "activation", None) is gelu:
            layer.activation = _erf_gelu
    return model


def read_sidecar(folder):
    """The model.json of an exported folder, with the artifact's path; one line naming what is missing.

    Args:
        folder: the folder `export` wrote.
    """
    path = os.path.join(folder, MODEL_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} has no {MODEL_JSON}: give a folder written by `python cli.py export`")
    sidecar = runs.read_json(path, writer="export")
    artifact = os.path.join(folder, sidecar["artifact"])
    if not os.path.exists(artifact):
        raise FileNotFoundError(f"{artifact} (named in {path}) is missing: export the model again")
    return sidecar, artifact


__all__ = ["FORMATS", "MODEL_JSON", "TOLERANCE", "ExportError", "export", "export_model_file", "read_sidecar"]
