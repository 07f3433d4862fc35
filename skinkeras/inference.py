"""The one inference path: loading models and runs, batched masks and probabilities, classifier inputs.

Used by seg-eval, segment, cls-eval, gradcam, predict and the bench. Input
names come from the model's contract (`skinkeras.models.contract`).
"""

import os
import zipfile
from dataclasses import dataclass

import keras
import numpy as np
from PIL import Image

from skinkeras import distribute, runs
from skinkeras.data.pipeline import ImageReadError, read_rgb, resize_rgb
from skinkeras.precision import with_precision
from skinkeras.models.contract import CLASSIFICATION, METADATA, METADATA_MASK, ORIGINAL, SEGMENTED, contract_of


def load_model(path, task=None, precision=None):
    """Loads a `.keras` model of this project (the custom layers are registered on import).

    A missing file, a file that is not a Keras archive, a damaged archive and a
    model of the other task each give one line that names the file. Files load
    with Keras' `safe_mode=True`: no lambda or other code is deserialised.

    Args:
        path: `.keras` file.
        task: "segmentation" or "classification" to check what the model is, or None.
        precision: fp32 | bf16 | fp16 to compute in (`skinkeras.precision.with_precision`), or None for the
            precision the model was saved with.
    """
    import skinkeras.layers  # noqa: F401  (registers the custom layers)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found: {path} (train one with `python cli.py seg-train` "
                                "or `cls-train`; give RUN/best.keras)")
    damaged = (f"cannot read model file {path}: not a valid .keras archive (damaged or truncated); "
               "use the run's last.keras or train again")
    if not zipfile.is_zipfile(path):
        raise ValueError(damaged)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types here (zip CRC, h5, config errors)
        reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
        raise ValueError(f"{damaged} ({exc.__class__.__name__}: {reason})") from None
    if task is not None and contract_of(model).task != task:
        raise ValueError(f"{path} is a {contract_of(model).task} model ({model.name}); this needs a {task} model "
                         f"(RUN/best.keras of {'seg-train' if task == 'segmentation' else 'cls-train'})")
    return with_precision(model, precision) if precision else model


def model_image_size(model):
    """(H, W) that the model's image inputs take.

    Args:
        model: keras model with image inputs.
    """
    shape = next(t.shape for t in model.inputs if len(t.shape) == 4)
    return int(shape[1]), int(shape[2])


def predict_masks(model, images, batch_size=8):
    """Predicted lesion probabilities (N, H, W) of 0-255 images, from the main output.

    Args:
        model: segmentation model (dict or single output).
        images: uint8 or float (N, H, W, 3) at the model's input size.
        batch_size: prediction batch size.
    """
    images = np.asarray(images, dtype="float32")
    count = len(images)
    placement = _single_process_placement()
    batch_size = placement.padded_length(batch_size)
    # Padded to whole batches (of a multiple of the device count) and trimmed: every image is predicted exactly
    # once, and a short last batch does not compile the predict step a second time (JAX, TensorFlow).
    images = np.concatenate([images, np.repeat(images[-1:], -count % batch_size, axis=0)])
    out = model.predict(images, batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        out = out[contract_of(model).output]
    return np.asarray(out)[:count, ..., 0]


def _single_process_placement():
    """The current placement; prediction gathers its outputs in one process, so several processes are refused."""
    placement = distribute.current()
    if placement.num_processes > 1:
        raise ValueError("prediction runs in one process: evaluate with --devices N (no --num-processes)")
    return placement


def probability_to_mask(prob, size):
    """Resizes a probability map to (H, W) bilinearly and thresholds it at 0.5.

    Args:
        prob: float (h, w) probabilities.
        size: (H, W) of the original image.
    """
    img = Image.fromarray(prob.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img) > 0.5


def predict_original_size(model, items, batch_size=8, progress=True, on_result=None):
    """Predicts binary masks at each image's original size, reading images lazily in batches.

    Unreadable images are skipped and returned, never raised, so a long run keeps its finished work.

    Args:
        model: segmentation model.
        items: list of (image_id, image_path).
        batch_size: images per prediction batch.
        progress: show a progress bar.
        on_result: called as on_result(image_id, image_uint8, mask_bool) for each image, as soon as it is done.

    Returns:
        list of (image_path, reason) skipped.
    """
    size = model_image_size(model)
    bar = keras.utils.Progbar(len(items), unit_name="image") if progress and items else None
    skipped, done = [], 0
    for start in range(0, len(items), batch_size):
        batch, originals = [], []
        for image_id, path in items[start : start + batch_size]:
            try:
                image = read_rgb(path)
            except ImageReadError as exc:
                skipped.append((path, str(exc)))
                continue
            batch.append((image_id, path))
            originals.append(image)
        if batch:
            probs = predict_masks(model, np.stack([resize_rgb(im, size) for im in originals]), batch_size)
            for (image_id, _), image, prob in zip(batch, originals, probs):
                on_result(image_id, image, probability_to_mask(prob, image.shape[:2]))
        done += len(items[start : start + batch_size])
        if bar is not None:
            bar.update(done)
    return skipped


def cls_arrays(df, encoder, size, model_inputs, progress=True, cache=None, dataset=None):
    """Loads the images and metadata a classifier takes, for the rows of `df`.

    With `cache`, no image file is decoded: the image inputs are `CachedRows` of the cache's memory maps (a batch
    reads its own rows), after `InputCache.check` has refused a cache of another size, dataset or file list.

    Args:
        df: records (image_path; seg_path when the model reads segmented images; age, sex, site).
        encoder: fitted `MetadataEncoder`.
        size: (H, W).
        model_inputs: the model's input names (its contract's `inputs`).
        progress: show progress bars.
        cache: an input cache folder (or opened `InputCache`) written by `prepare`, or None.
        dataset: the records' dataset, checked against the cache's.

    Returns:
        (arrays dict input name -> array over all rows, kept row positions, skipped [(path, reason)]).
    """
    from skinkeras.data.metadata import sample_availability
    from skinkeras.data.pipeline import load_image_rows

    kept = np.arange(len(df))
    arrays, skipped = {}, []
    from skinkeras.data.cache import IMAGES, SEGMENTED_IMAGES, open_cache

    views = [(name, column, array) for name, column, array in ((ORIGINAL, "image_path", IMAGES),
                                                               (SEGMENTED, "seg_path", SEGMENTED_IMAGES))
             if name in model_inputs]
    if cache is not None:

        selection = open_cache(cache).check(dataset, size[0], df["image_id"],
                                            {array: list(df[column]) for _, column, array in views})
        for name, _, array in views:
            arrays[name] = selection.view(array)
        kept = np.flatnonzero(selection.ok)
        skipped += selection.skipped
    else:
        for name, column, _ in views:
            images, ok, bad = load_image_rows(list(df[column]), size, progress)
            full = np.zeros((len(df), *size, 3), np.uint8)
            full[ok] = images
            arrays[name] = full
            kept = np.intersect1d(kept, ok)
            skipped += bad
    if METADATA in model_inputs:
        features, avail = encoder.transform(df)
        arrays[METADATA] = features
        arrays[METADATA_MASK] = sample_availability(avail)
    return arrays, kept, skipped


def one_image_inputs(contract, views, encoder, age=None, sex=None, site=None):
    """The input dict of one sample: the views the model takes and, if it takes them, the metadata.

    Args:
        contract: the classifier's contract.
        views: dict ORIGINAL / SEGMENTED -> uint8 (1, H, W, 3).
        encoder: fitted `MetadataEncoder`.
        age: years or None.
        sex: sex or None.
        site: site or None.

    Returns:
        (inputs dict, whether any metadata was available).
    """
    from skinkeras.data.metadata import sample_availability

    features, avail = encoder.encode_one(age, sex, site)  # unknown values: one line listing the valid ones
    inputs = {METADATA: features, METADATA_MASK: sample_availability(avail), **views}
    return {k: v for k, v in inputs.items() if k in contract.inputs}, bool(avail.any())


def classifier_dataset(model, arrays, labels, batch_size, rows, orientation=None):
    """Batches of the model's inputs over `rows` (no augmentation, in order).

    Args:
        model: classifier.
        arrays: from `cls_arrays`.
        labels: (N,) int labels (or -1).
        batch_size: batch size.
        rows: row positions to predict.
        orientation: one test-time view (quarter turns, flip) of every image, or None.
    """
    from skinkeras.data.pipeline import ClassificationDataset

    contract = contract_of(model)
    return ClassificationDataset(arrays, labels, contract.inputs, batch_size, image_inputs=contract.image_inputs,
                                 plan=lambda epoch: rows, orientation=orientation)


def predict_probabilities(model, arrays, labels, rows, batch_size=16, progress=False, orientation=None):
    """(len(rows), num_classes) probabilities of a classifier.

    Args:
        model: classifier.
        arrays: from `cls_arrays`.
        labels: (N,) int labels (or -1).
        rows: row positions to predict.
        batch_size: batch size.
        progress: show Keras' progress bar.
        orientation: one test-time view (quarter turns, flip) of every image, or None.
    """
    dataset = classifier_dataset(model, arrays, labels, batch_size, rows, orientation)
    # Padded to whole batches, then trimmed below: one compile of the predict step.
    dataset.distribute(_single_process_placement(), training=False)
    return np.asarray(model.predict(dataset, verbose=1 if progress else 0))[: len(rows)]


def predict_views(model, arrays, labels, rows, batch_size=16, tta="none", progress=False):
    """(views, len(rows), num_classes) probabilities of each test-time view (`TTA_VIEWS[tta]`).

    The mean over the first axis is the test-time-augmented prediction; its spread is a second confidence
    score (`skinkeras.trust.referral.view_spread`).

    Args:
        model: classifier.
        arrays: from `cls_arrays`.
        labels: (N,) int labels (or -1).
        rows: row positions to predict.
        batch_size: batch size.
        tta: none | flip | flip-rotate.
        progress: show Keras' progress bar.
    """
    from skinkeras.data.pipeline import TTA_VIEWS

    if tta not in TTA_VIEWS:
        raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_VIEWS)}")
    return np.stack([predict_probabilities(model, arrays, labels, rows, batch_size, progress, view)
                     for view in TTA_VIEWS[tta]])


@dataclass
class ClsRun:
    """A trained classifier with what its run folder knows about it.

    Args:
        model: the loaded model.
        cfg: the run's `ClsTrainConfig`.
        classes: class names in label order.
        encoder: the run's fitted `MetadataEncoder`.
        dir: the run folder.
        path: the model file.
        calibration: the run's calibration.json when it applies to this model file, else None.
        calibration_note: one line saying which probabilities are used and why.
    """

    model: object
    cfg: object
    classes: tuple
    encoder: object
    dir: str
    path: str
    calibration: dict | None = None
    calibration_note: str = ""

    @property
    def contract(self):
        return contract_of(self.model)

    @property
    def temperature(self):
        """The fitted temperature, or None when the probabilities are used raw."""
        return self.calibration["temperature"] if self.calibration else None

    def calibrated(self, probs):
        """The probabilities this run answers with: temperature-scaled when calibrated, else as given.

        Args:
            probs: (N, C) raw probabilities of the model.
        """
        from skinkeras.trust.calibration import scale_temperature

        return scale_temperature(probs, self.temperature) if self.calibration else np.asarray(probs, np.float64)

    def referral_threshold(self, target):
        """(threshold, source) of the run's referral at `target` accuracy, or (None, reason).

        Args:
            target: accuracy the kept cases reached on validation, e.g. 0.95.
        """
        if not self.calibration:
            return None, self.calibration_note
        for point in self.calibration.get("referral", {}).get("targets", []):
            if abs(point["target"] - float(target)) < 1e-9:
                if point["threshold"] is None:
                    return None, f"no threshold reached {target:.0%} accuracy on {self.calibration_source}"
                return point["threshold"], (f"calibrated confidence >= {point['threshold']:.4f} kept "
                                            f"{point['accuracy']:.1%} accuracy at {point['coverage']:.1%} coverage "
                                            f"on {self.calibration_source}")
        return None, (f"no referral threshold for {target:.0%} in {runs.CALIBRATION_JSON}; run `cls-calibrate --run "
                      f"{self.dir} --refer-at {target}`")

    @property
    def calibration_source(self):
        fitted = (self.calibration or {}).get("fitted_on", {})
        return f"{fitted.get('images', '?')} {fitted.get('subset', 'val')} images of {self.dir}"

    @property
    def needs_segmented(self):
        return SEGMENTED in self.contract.inputs


def load_cls_run(model_path, precision=None, calibration=True):
    """Loads RUN/best.keras of `cls-train` with its run folder's config, class names and metadata encoder.

    Args:
        model_path: a `.keras` file inside a cls-train run folder.
        precision: fp32 | bf16 | fp16 to compute in, or None for the model's own.
        calibration: use the run's calibration.json when it was fitted for this model file (False: raw).
    """
    from skinkeras.config import ClsTrainConfig, from_json
    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.data.sets import dataset_classes

    run_dir = os.path.dirname(os.path.abspath(model_path))
    model = load_model(model_path, task=CLASSIFICATION, precision=precision)
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise FileNotFoundError(f"{run_dir} has no config.json: give the best.keras inside a cls-train run folder")
    cfg = from_json(ClsTrainConfig, os.path.join(run_dir, "config.json"))
    encoder = MetadataEncoder.from_dict(runs.read_json(os.path.join(run_dir, "metadata_encoder.json")))
    run = ClsRun(model, cfg, dataset_classes(cfg.dataset), encoder, run_dir, os.path.abspath(model_path))
    run.calibration, run.calibration_note = run_calibration(run_dir, model_path, calibration)
    return run


def run_calibration(run_dir, model_path, use=True):
    """(calibration dict or None, one-line note) for a model file of a classifier run.

    The temperature belongs to the model it was fitted on: a calibration.json written for another file (an
    earlier best.keras, or last.keras) is not applied, and the note says how to fit one.

    Args:
        run_dir: the run folder.
        model_path: the model file evaluated.
        use: False for raw probabilities (--no-calibration).
    """
    path = os.path.join(run_dir, runs.CALIBRATION_JSON)
    if not use:
        return None, "raw probabilities (--no-calibration)"
    if not os.path.isfile(path):
        return None, f"raw probabilities: the run has no {runs.CALIBRATION_JSON} (fit one: cls-calibrate --run {run_dir})"
    found = runs.read_json(path)
    if found.get("model_sha256") != runs.file_sha256(model_path):
        return None, (f"raw probabilities: {path} was fitted on another model file than {model_path} "
                      f"(fit again: cls-calibrate --run {run_dir})")
    fitted = found.get("fitted_on", {})
    return found, (f"calibrated probabilities: temperature {found['temperature']:.3f} fitted on "
                   f"{fitted.get('images', '?')} {fitted.get('subset', 'val')} images ({path})")
