"""`cls-eval`: classifier scores in the ISIC formats (paper 6.2), checked against the official scorer."""

import os

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from skinkeras import distribute, runs
from skinkeras.classification.records import OFFICIAL_COLUMNS, attach_segmented, split_subset
from skinkeras.config import ClsEvalConfig
from skinkeras.data.classification import epoch_prior, read_split
from skinkeras.data.sets import EXTERNAL_DATASETS, external_records, model_labels
from skinkeras.classification.calibrate import referral_thresholds
from skinkeras.classification.trust import trust_scores
from skinkeras.inference import cls_arrays, load_cls_run, model_image_size, predict_views
from skinkeras.precision import precision_of
from skinkeras.intervals import classification_intervals, paired_difference
from skinkeras.metrics import DECISION_METRICS, PRIOR_CORRECTED, classification_scores, prior_corrected
from skinkeras.report.figures import plot_confusion, plot_roc
from skinkeras.trust.referral import DEFAULT_TARGETS, parse_targets
from skinkeras.trust.subgroups import MIN_GROUP


MELANOMA = "mel"


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


def external_scores(labels, probs, classes):
    """Scores on the classes an external set has: probabilities renormalised over those classes.

    A HAM10000 model asked about a PH2 image can still answer "bcc"; over the set's own classes the question is
    the one the external labels can answer. The scores over all of the model's classes are kept under
    "all_classes".

    Args:
        labels: int labels in the model's classes (N,).
        probs: (N, C) probabilities over the model's classes.
        classes: the model's class names.

    Returns:
        (scores dict, restricted labels, restricted probabilities, restricted class names).
    """
    present = sorted(set(int(c) for c in labels))
    sub = probs[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    sub_labels = np.searchsorted(present, labels)
    sub_classes = [classes[c] for c in present]
    scores = classification_scores(sub_labels, sub, sub_classes)
    full = classification_scores(labels, probs, classes)
    scores["all_classes"] = {k: full[k] for k in ("accuracy", "balanced_accuracy", "top2_accuracy")}
    return scores, sub_labels, sub, sub_classes


def melanoma_index(classes):
    """Position of the melanoma class among `classes` (mel / MEL), or None."""
    lower = [c.lower() for c in classes]
    return lower.index(MELANOMA) if MELANOMA in lower else None


def add_intervals(metrics, labels, probs, classes, groups, n_resamples, seed, full_probs=None, full_labels=None,
                  full_classes=None):
    """Adds 95% bootstrap intervals (resampled by lesion) of the headline scores to `metrics`.

    Args:
        metrics: the scores (updated in place: "intervals", "bootstrap").
        labels, probs, classes: what the scores were computed on.
        groups: lesion id of each row.
        n_resamples: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.
        full_probs, full_labels, full_classes: the model's own classes, for melanoma-vs-rest (default: as above).
    """
    if not n_resamples:
        return metrics
    full_probs = probs if full_probs is None else full_probs
    full_labels = labels if full_labels is None else full_labels
    full_classes = classes if full_classes is None else full_classes
    found = classification_intervals(labels, probs, list(classes), groups, n_resamples=n_resamples, seed=seed)
    intervals = {k: found.pop(k) for k in ("accuracy", "balanced_accuracy", "auc_macro") if k in found}
    mel = melanoma_index(full_classes)
    if mel is not None and metrics.get("melanoma_auc") is not None:
        more = classification_intervals(full_labels, full_probs, list(full_classes), groups,
                                        n_resamples=n_resamples, seed=seed, positive=full_classes[mel])
        intervals["melanoma_auc"] = more[f"{full_classes[mel]}_auc"]
        found["bootstrap"]["undefined"]["melanoma_auc"] = more["bootstrap"]["undefined"][f"{full_classes[mel]}_auc"]
    metrics["intervals"] = intervals
    metrics["bootstrap"] = found["bootstrap"]
    return metrics


def training_prior(run):
    """Class shares of a run's training epochs, balanced as it trained them (its split.csv and config).

    Args:
        run: `ClsRun` from `load_cls_run`.
    """
    split = read_split(os.path.join(run.dir, runs.SPLIT_CSV))
    labels = split.label[split.subset == "train"].to_numpy(np.int64)
    return epoch_prior(labels, len(run.classes), run.cfg.balance, run.cfg.balance_cap, run.cfg.balance_floor)


def decision_scores(labels, probs, classes, prior, groups, n_resamples, seed, external=False):
    """Scores of the prior-corrected (balanced) decision, with 95% lesion-bootstrap intervals.

    The headline scores keep the paper's argmax of the model's probabilities; this block scores the argmax of
    `prior_corrected` probabilities, the decision balanced accuracy asks for. A class without training images
    has no prior to correct, so the block then says why it is missing instead.

    Args:
        labels: int labels (N,) in the model's classes.
        probs: (N, C) probabilities over the model's classes.
        classes: the model's class names.
        prior: C training shares (`training_prior`).
        groups: lesion id of each row.
        n_resamples: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.
        external: score on the classes present, as `external_scores`.

    Returns:
        {"prior": {class: share}, "accuracy", "balanced_accuracy", "top2_accuracy", "recall": {class: recall},
        "intervals": {metric: [low, high]}}, or {"prior", "skipped": reason}.
    """
    prior = np.asarray(prior, np.float64)
    block = {"prior": dict(zip(classes, prior.tolist()))}
    if (prior <= 0).any():
        absent = ", ".join(c for c, p in zip(classes, prior) if p <= 0)
        return {**block, "skipped": f"no training image of {absent}: the prior cannot be corrected"}
    adjusted = prior_corrected(probs, prior)
    if external:
        scores, labels, adjusted, classes = external_scores(labels, adjusted, classes)
    else:
        scores = classification_scores(labels, adjusted, classes)
    block.update({k: scores[k] for k in (*DECISION_METRICS, "top2_accuracy")})
    block["recall"] = {c: v["recall"] for c, v in scores["per_class"].items()}
    if n_resamples:
        found = classification_intervals(labels, adjusted, list(classes), groups, n_resamples=n_resamples, seed=seed)
        block["intervals"] = {k: found[k] for k in DECISION_METRICS}
    return block


def cls_eval(model_path, out, subset="test", data_dir=None, images=None, seg_dir=None, batch_size=16, progress=True,
             dataset=None, bootstrap=1000, seed=0, cache=None, precision=None, tta="none", calibration=True,
             refer_at=DEFAULT_TARGETS, min_group=MIN_GROUP):
    """Evaluates a classifier on its run's test split (or another labelled set) in the ISIC formats.

    Writes metrics.json (accuracy, balanced_accuracy, auc_macro, top2_accuracy, melanoma_auc, per-class
    precision / recall / F1 / AUC, 95% bootstrap intervals resampled by lesion, and under "prior_corrected" the
    balanced decision's scores, `decision_scores`), predictions.csv (the model's own probabilities) and
    ground_truth.csv (ISIC challenge format, official class names), confusion_matrix.png and roc.png, and the
    trust block (`skinkeras.classification.trust`): calibration raw and calibrated with reliability.png, the
    risk-coverage curve with the referral operating points, the test-time augmentation's effect and
    subgroups.csv. The scored probabilities are the run's calibrated ones when its calibration.json applies.

    Args:
        model_path: RUN/best.keras of `cls-train` (its run folder supplies config, split and metadata encoder).
        out: output folder.
        subset: split subset to evaluate (train, val, test) when no other data is given; the official subset
            of an external ISIC 2017 folder.
        data_dir: evaluate all images of another dataset folder instead.
        images: image folder(s) of that dataset.
        seg_dir: segmented images of that dataset.
        batch_size: prediction batch size.
        progress: show progress bars.
        dataset: None (the run's own dataset), or an external set: ph2 | isic2017 (with data_dir), scored on
            the classes it has (see `skinkeras.data.sets`).
        bootstrap: bootstrap resamples for the intervals (0: none).
        seed: bootstrap seed.
        cache: input cache written by `prepare` for the evaluated images (read instead of decoding them).
        precision: fp32 | bf16 | fp16 to predict in, or None for the model's own.
        tta: test-time augmentation, none | flip | flip-rotate.
        calibration: apply the run's calibration.json (False: raw probabilities).
        refer_at: target accuracies of the referral operating points.
        min_group: subgroups with fewer images are listed as too small.
    """
    run = load_cls_run(model_path, precision, calibration)
    targets = parse_targets(refer_at)
    classes = run.classes
    external = dataset in EXTERNAL_DATASETS
    if external:
        df, problems, class_map = external_records(dataset, data_dir, subset)
        df["label"] = model_labels(df.dx, classes)
        unknown = df.label < 0
        problems = list(problems) + [(p, f"class {d!r} is not one of the model's classes")
                                     for p, d in zip(df.image_path[unknown], df.dx[unknown])]
        df = df[~unknown].reset_index(drop=True)
        if run.needs_segmented:
            df, problems = attach_segmented(df, seg_dir, problems)
        source = f"{dataset} ({subset}) in {data_dir}" if dataset == "isic2017" else f"{dataset} in {data_dir}"
    elif dataset not in (None, run.cfg.dataset):
        raise ValueError(f"--dataset {dataset!r}: this model was trained on {run.cfg.dataset}; evaluate another "
                         f"folder of it with --data-dir, or an external set with --dataset "
                         f"{'|'.join(EXTERNAL_DATASETS)}")
    else:
        df, problems, source = split_subset(run.cfg, run.dir, run.needs_segmented, subset, data_dir, images, seg_dir)
    if df.empty:
        raise ValueError(f"No images to evaluate in {source}")
    os.makedirs(out, exist_ok=True)
    arrays, kept, skipped = cls_arrays(df, run.encoder, model_image_size(run.model), run.contract.inputs, progress,
                                       cache, dataset or run.cfg.dataset)
    labels = df.label.to_numpy(np.int64)
    if progress:
        print(run.calibration_note)
    views = predict_views(run.model, arrays, labels, kept, batch_size, tta, progress)
    views = np.asarray(views, np.float64)
    probs = run.calibrated(views.mean(axis=0))
    labels, ids, groups = labels[kept], df.image_id.to_numpy()[kept], df.lesion_id.astype(str).to_numpy()[kept]
    info = {"source": source, "model": os.path.abspath(model_path), "skipped": len(skipped),
            "precision": precision_of(run.model), "probabilities": run.calibration_note, "tta": tta}
    if external:
        info.update({"dataset": dataset, "class_map": class_map})
    metrics = write_scores(out, ids, labels, groups, probs, classes, run.cfg.dataset, training_prior(run), bootstrap,
                           seed, external, info, list(problems) + skipped)
    thresholds, source = referral_thresholds(run, targets, tta, batch_size, cache if not external else None,
                                             progress)
    metrics.update(trust_scores(out, labels, groups, classes, views, run, df.iloc[kept], dataset or run.cfg.dataset,
                                tta, thresholds, source, min_group, bootstrap, seed, external,
                                melanoma_index(classes)))
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    return metrics


def write_scores(out, ids, labels, groups, probs, classes, dataset, prior, bootstrap=1000, seed=0, external=False,
                 info=None, skipped=()):
    """Scores a classifier's probabilities and writes them as an evaluation folder (what `cls-eval` writes).

    Writes metrics.json, predictions.csv and ground_truth.csv (ISIC format), lesions.csv, confusion_matrix.png,
    roc.png and skipped.csv; any model's folder can then be compared with `paired_against`.

    Args:
        out: output folder (exists).
        ids, labels, groups: image ids, int labels and lesion ids of the scored images.
        probs: (N, C) probabilities over `classes`.
        classes: class names in label order.
        dataset: the dataset whose official CSV columns name the classes.
        prior: class shares the model was trained on (`training_prior`), for the balanced decision.
        bootstrap: bootstrap resamples for the intervals (0: none).
        seed: bootstrap seed.
        external: score on the classes present (`external_scores`).
        info: more entries for metrics.json (source, model, ...).
        skipped: [(path, reason)] left out, listed in skipped.csv.
    """
    # The CSV holds 8 decimals; scoring the same rounded values keeps our numbers identical to the official scorer's.
    probs = np.round(np.asarray(probs, np.float64), 8)
    if external:
        metrics, sub_labels, sub_probs, sub_classes = external_scores(labels, probs, classes)
        metrics["scored_classes"] = sub_classes
    else:
        metrics = classification_scores(labels, probs, classes)
        sub_labels, sub_probs, sub_classes = labels, probs, classes
    mel = melanoma_index(classes)
    truth = labels == mel if mel is not None else None
    # Melanoma against the rest on the model's own melanoma probability: the clinically relevant question.
    metrics["melanoma_auc"] = (float(roc_auc_score(truth, probs[:, mel]))
                               if truth is not None and 0 < truth.sum() < len(truth) else None)
    add_intervals(metrics, sub_labels, sub_probs, sub_classes, groups, bootstrap, seed, probs, labels, classes)
    metrics[PRIOR_CORRECTED] = decision_scores(labels, probs, classes, prior, groups, bootstrap, seed, external)
    metrics.update(info or {})
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    isic_csv(ids, probs, classes, dataset, os.path.join(out, "predictions.csv"))
    isic_csv(ids, np.eye(len(classes))[labels], classes, dataset, os.path.join(out, "ground_truth.csv"))
    pd.DataFrame({"image": ids, "lesion_id": groups}).to_csv(os.path.join(out, runs.LESIONS_CSV), index=False)
    plot_confusion(sub_labels, sub_probs.argmax(axis=1), sub_classes, os.path.join(out, "confusion_matrix.png"))
    plot_roc(sub_labels, sub_probs, sub_classes, os.path.join(out, "roc.png"))
    runs.write_skipped(out, list(skipped))
    return metrics


def read_evaluation(folder, classes, dataset):
    """Reads a `cls-eval` folder back: (image ids, labels, probabilities in `classes` order, lesion ids).

    Args:
        folder: output folder of `cls-eval` (predictions.csv, ground_truth.csv, lesions.csv).
        classes: the model's class names in label order.
        dataset: the model's dataset (its official CSV columns).
    """
    columns = OFFICIAL_COLUMNS[dataset]
    order = [official for ours in classes for official, name in columns.items() if name == ours]
    try:
        pred = pd.read_csv(os.path.join(folder, "predictions.csv"))
        truth = pd.read_csv(os.path.join(folder, "ground_truth.csv")).set_index("image").loc[pred.image]
        lesions = pd.read_csv(os.path.join(folder, runs.LESIONS_CSV)).set_index("image").loc[pred.image]
    except (FileNotFoundError, KeyError) as exc:
        raise ValueError(f"{folder} is not a complete cls-eval folder ({exc}); run `cls-eval --out {folder}` "
                         "again") from None
    return (pred.image.to_numpy(), truth[order].to_numpy().argmax(axis=1), pred[order].to_numpy(np.float64),
            lesions.lesion_id.astype(str).to_numpy())


def paired_against(out, against, classes, dataset, bootstrap=1000, seed=0):
    """Paired bootstrap differences (this evaluation minus another) on the images both scored.

    Both models are resampled on the same lesions, so what they share (the hard lesions) cancels; writes the
    result under "paired" in OUT/metrics.json, the balanced decisions' differences (each model corrected by its
    own training prior) under "paired" / "prior_corrected".

    Args:
        out: this evaluation's folder.
        against: the other model's `cls-eval` folder (same test images).
        classes: class names in label order.
        dataset: the models' dataset.
        bootstrap: resamples.
        seed: bootstrap seed.
    """
    ids_a, labels_a, probs_a, groups = read_evaluation(out, classes, dataset)
    ids_b, labels_b, probs_b, _ = read_evaluation(against, classes, dataset)
    position = {i: k for k, i in enumerate(ids_b)}
    common = np.array([i in position for i in ids_a])
    if not common.any():
        raise ValueError(f"{out} and {against} scored no image in common; compare evaluations of the same split")
    rows_b = np.array([position[i] for i in ids_a[common]])
    if (labels_b[rows_b] != labels_a[common]).any():
        raise ValueError(f"{out} and {against} give the same image different labels; they are not the same data")
    paired = {"against": os.path.abspath(against), "images": int(common.sum()),
              "only_here": int((~common).sum()), "only_there": int(len(ids_b) - common.sum())}
    for metric in ("accuracy", "balanced_accuracy", "auc_macro"):
        paired[metric] = paired_difference(labels_a[common], probs_a[common], probs_b[rows_b], list(classes),
                                           groups[common], metric=metric, n_resamples=bootstrap, seed=seed)
    priors = [runs.read_json(os.path.join(f, "metrics.json")).get(PRIOR_CORRECTED, {}) for f in (out, against)]
    if all("accuracy" in p for p in priors):
        # The balanced decision of each model, each with its own training prior, on the same resampled lesions.
        a, b = (prior_corrected(p, [block["prior"][c] for c in classes])
                for p, block in ((probs_a[common], priors[0]), (probs_b[rows_b], priors[1])))
        paired[PRIOR_CORRECTED] = {metric: paired_difference(labels_a[common], a, b, list(classes), groups[common],
                                                             metric=metric, n_resamples=bootstrap, seed=seed)
                                   for metric in DECISION_METRICS}
    path = os.path.join(out, "metrics.json")
    runs.write_json(path, {**runs.read_json(path), "paired": paired})
    return paired


def evaluate_classification(cfg: ClsEvalConfig, progress=True):
    """The `cls-eval` stage; returns its metrics.

    Args:
        cfg: `ClsEvalConfig`.
        progress: show progress bars.
    """
    distribute.configure(cfg.devices)
    metrics = cls_eval(cfg.model, cfg.out, cfg.subset, cfg.data_dir, cfg.images, cfg.seg_dir, cfg.batch_size,
                       progress, cfg.dataset, cfg.bootstrap, cfg.seed, cfg.cache, cfg.precision, cfg.tta,
                       cfg.calibration, cfg.refer_at, cfg.min_group)
    if cfg.against:
        run = runs.read_json(os.path.join(os.path.dirname(os.path.abspath(cfg.model)), "classes.json"))
        metrics["paired"] = paired_against(cfg.out, cfg.against, run["classes"], run["dataset"], cfg.bootstrap or 1000,
                                           cfg.seed)
    return metrics
