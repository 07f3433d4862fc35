"""`cls-calibrate`: a classifier run's temperature and referral thresholds, fitted on its validation split.

Temperature scaling (Guo et al. 2017) fitted by minimising the validation NLL; referral thresholds are the
lowest calibrated confidences whose kept validation cases reach each target accuracy. Both are written to
RUN/calibration.json with the model file's SHA-256, so they are applied only to the model they were fitted on.
"""

import datetime
import os

import numpy as np

from skinkeras import runs
from skinkeras.training import BEST
from skinkeras.trust.calibration import BINNING, calibration_errors, fit_temperature, scale_temperature
from skinkeras.trust.referral import DEFAULT_TARGETS, parse_targets, threshold_for_accuracy

SCORE = "calibrated maximum probability"


def fit_calibration(run_dir, model_path, labels, probs, targets=DEFAULT_TARGETS, subset="val"):
    """Fits the temperature and the referral thresholds on held-out probabilities; writes calibration.json.

    Args:
        run_dir: the run folder.
        model_path: the model file the probabilities came from (its SHA-256 ties the calibration to it).
        labels: int labels (N,) of the held-out images.
        probs: (N, C) raw probabilities of the model on them.
        targets: accuracies the kept cases must reach (one threshold each).
        subset: the split subset the images are (recorded).

    Returns:
        the calibration dict written.
    """
    fit = fit_temperature(labels, probs)
    calibrated = scale_temperature(probs, fit["temperature"])
    found = {
        "temperature": fit["temperature"],
        "model": os.path.basename(model_path),
        "model_sha256": runs.file_sha256(model_path),
        "fitted_on": {"subset": subset, "images": fit["images"], "split": runs.SPLIT_CSV},
        "method": "temperature scaling: softmax(log p / T), T minimising the NLL (bounded search over log T)",
        "raw": calibration_errors(labels, probs),
        "calibrated": calibration_errors(labels, calibrated),
        "binning": BINNING,
        "referral": {"score": SCORE, "tta": "none",
                     "targets": [threshold_for_accuracy(labels, calibrated, t) for t in targets]},
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    runs.write_json(os.path.join(run_dir, runs.CALIBRATION_JSON), found)
    return found


def validation_views(found, tta="none", batch_size=16, cache=None, progress=True):
    """Labels and per-view raw probabilities of a run's validation split.

    Args:
        found: `ClsRun` from `load_cls_run`.
        tta: test-time views (`skinkeras.data.pipeline.TTA_VIEWS`).
        batch_size: prediction batch size.
        cache: input cache of the run's images (default: the run's own `cache`).
        progress: show progress bars.

    Returns:
        (labels (N,), views (V, N, C), description of the images).
    """
    from skinkeras.classification.records import split_subset
    from skinkeras.inference import cls_arrays, model_image_size, predict_views

    df, _, source = split_subset(found.cfg, found.dir, found.needs_segmented, "val")
    if df.empty:
        raise ValueError(f"{found.dir}: the val split is empty; nothing to fit a temperature on")
    arrays, kept, _ = cls_arrays(df, found.encoder, model_image_size(found.model), found.contract.inputs, progress,
                                 cache or found.cfg.cache, found.cfg.dataset)
    labels = df.label.to_numpy(np.int64)
    views = predict_views(found.model, arrays, labels, kept, batch_size, tta, progress)
    return labels[kept], views, f"{len(kept)} images of {source}"


def calibrate(run, targets=DEFAULT_TARGETS, batch_size=16, cache=None, progress=True):
    """Fits RUN's calibration on its validation split (for runs trained before cls-train did it at the end).

    Args:
        run: the run folder, or a model file inside it (default best.keras).
        targets: referral target accuracies (a sequence or "0.90,0.95").
        batch_size: prediction batch size.
        cache: input cache of the run's images (default: the run's own `cache`, when it has one).
        progress: show progress bars.

    Returns:
        the calibration dict written to RUN/calibration.json.
    """
    from skinkeras.inference import load_cls_run

    targets = parse_targets(targets)
    model_path = os.fspath(run) if str(run).endswith(".keras") else os.path.join(run, BEST)
    found = load_cls_run(model_path, calibration=False)
    labels, views, source = validation_views(found, "none", batch_size, cache, progress)
    if progress:
        print(f"Fitting the temperature on {source}")
    return fit_calibration(found.dir, model_path, labels, views[0], targets)


def run_calibrate(cfg):
    """The `cls-calibrate` stage; returns the calibration written.

    Args:
        cfg: `CalibrateConfig`.
    """
    from skinkeras import distribute

    distribute.configure(cfg.devices)
    return calibrate(cfg.run, cfg.refer_at, cfg.batch_size, cfg.cache)


def referral_thresholds(found, targets, tta="none", batch_size=16, cache=None, progress=True):
    """Thresholds of the calibrated confidence chosen on validation, one per target accuracy.

    The run's calibration.json holds them for single-view prediction; another test-time augmentation (or a run
    evaluated without calibration) changes the confidences, so the validation split is predicted again the
    same way and the thresholds chosen on it.

    Args:
        found: `ClsRun` (its calibration applied or not).
        targets: target accuracies.
        tta: the test-time views the evaluation uses.
        batch_size, cache, progress: for predicting the validation split when needed.

    Returns:
        ([`threshold_for_accuracy` dicts], source line); thresholds None with the reason when the validation
        split cannot be read.
    """
    stored = {round(p["target"], 9): p for p in (found.calibration or {}).get("referral", {}).get("targets", [])}
    if found.calibration and tta == "none" and all(round(t, 9) in stored for t in targets):
        return [stored[round(t, 9)] for t in targets], f"{runs.CALIBRATION_JSON} ({found.calibration_source})"
    try:
        labels, views, source = validation_views(found, tta, batch_size, cache, progress)
    except (OSError, ValueError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return [{"target": t, "threshold": None, "coverage": None, "accuracy": None, "images": 0} for t in targets], (
            f"no threshold: the validation split could not be read ({reason})")
    probs = found.calibrated(views.mean(axis=0))
    return ([threshold_for_accuracy(labels, probs, t) for t in targets],
            f"{source}, predicted with --tta {tta}{'' if found.calibration else ' (raw probabilities)'}")
