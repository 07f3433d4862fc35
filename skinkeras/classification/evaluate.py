"""`cls-eval`: classifier scores in the ISIC formats (paper 6.2), checked against the official scorer."""

import os

import numpy as np
import pandas as pd

from skinkeras import distribute, runs
from skinkeras.classification.records import OFFICIAL_COLUMNS, split_subset
from skinkeras.config import ClsEvalConfig
from skinkeras.inference import cls_arrays, load_cls_run, model_image_size, predict_probabilities
from skinkeras.metrics import classification_scores
from skinkeras.report.figures import plot_confusion, plot_roc


def isic_csv(image_ids, values, classes, dataset, path):
    """Writes an ISIC challenge CSV: `image` + one column per class with its official name and order.

    Args:
        image_ids: image ids.
        values: (N, C) probabilities (or one-hot truth) in `classes` order.
        classes: our class names.
        dataset: "ham10000" or "isic2019".
        path: output file.
    """
    columns = OFFICIAL_COLUMNS[dataset]
    frame = pd.DataFrame({"image": list(image_ids)})
    for official, ours in columns.items():
        frame[official] = np.asarray(values)[:, list(classes).index(ours)]
    frame.to_csv(path, index=False, float_format="%.8f")
    return path


def cls_eval(model_path, out, subset="test", data_dir=None, images=None, seg_dir=None, batch_size=16, progress=True):
    """Evaluates a classifier on its run's test split (or another labelled set) in the ISIC formats.

    Writes metrics.json (accuracy, balanced_accuracy, auc_macro, top2_accuracy,
    per-class precision / recall / F1 / AUC), predictions.csv and
    ground_truth.csv (ISIC challenge format, official class names),
    confusion_matrix.png and roc.png.

    Args:
        model_path: RUN/best.keras of `cls-train` (its run folder supplies config, split and metadata encoder).
        out: output folder.
        subset: split subset to evaluate (train, val, test) when no other data is given.
        data_dir: evaluate all images of another dataset folder instead.
        images: image folder(s) of that dataset.
        seg_dir: segmented images of that dataset.
        batch_size: prediction batch size.
        progress: show progress bars.
    """
    run = load_cls_run(model_path)
    df, problems, source = split_subset(run.cfg, run.dir, run.needs_segmented, subset, data_dir, images, seg_dir)
    if df.empty:
        raise ValueError(f"No images to evaluate in {source}")
    os.makedirs(out, exist_ok=True)
    arrays, kept, skipped = cls_arrays(df, run.encoder, model_image_size(run.model), run.contract.inputs, progress)
    labels = df.label.to_numpy(np.int64)
    probs = predict_probabilities(run.model, arrays, labels, kept, batch_size, progress)
    labels, ids = labels[kept], df.image_id.to_numpy()[kept]
    # The CSV holds 8 decimals; scoring the same rounded values keeps our numbers identical to the official scorer's.
    probs = np.round(np.asarray(probs, np.float64), 8)
    classes = run.classes
    metrics = classification_scores(labels, probs, classes)
    metrics.update({"source": source, "model": os.path.abspath(model_path), "skipped": len(skipped)})
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    isic_csv(ids, probs, classes, run.cfg.dataset, os.path.join(out, "predictions.csv"))
    isic_csv(ids, np.eye(len(classes))[labels], classes, run.cfg.dataset, os.path.join(out, "ground_truth.csv"))
    plot_confusion(labels, probs.argmax(axis=1), classes, os.path.join(out, "confusion_matrix.png"))
    plot_roc(labels, probs, classes, os.path.join(out, "roc.png"))
    runs.write_skipped(out, list(problems) + skipped)
    return metrics


def evaluate_classification(cfg: ClsEvalConfig, progress=True):
    """The `cls-eval` stage; returns its metrics.

    Args:
        cfg: `ClsEvalConfig`.
        progress: show progress bars.
    """
    distribute.configure(cfg.devices)
    return cls_eval(cfg.model, cfg.out, cfg.subset, cfg.data_dir, cfg.images, cfg.seg_dir, cfg.batch_size, progress)
