"""Segmentation metrics that reproduce the official ISIC scorer, plus Keras training metrics.

The numpy half mirrors ``isic-challenge-scoring`` 5.6 (``SegmentationScore``):

* Binarisation: a mask pixel is foreground when its 8-bit value is ``> 128``
  (strictly; 128 is background, 129 is foreground), for truth and prediction alike.
* Per image, from the confusion counts TP, FP, FN, TN:

  - accuracy    = (TP + TN) / (TP + TN + FP + FN)
  - sensitivity = TP / (TP + FN), or 1.0 when TP + FN == 0 (empty truth)
  - specificity = TN / (TN + FP), or 1.0 when TN + FP == 0 (truth covers the image)
  - jaccard     = TP / (TP + FP + FN), or 1.0 when TP + FP + FN == 0 (both empty)
  - dice        = 2TP / (2TP + FP + FN), or 1.0 when TP + FP + FN == 0 (both empty)
  - threshold_jaccard = jaccard if jaccard >= 0.65 else 0.0 (exactly 0.65 is kept)

  An empty truth with a non-empty prediction therefore scores dice = jaccard = 0
  but sensitivity = 1.
* Aggregation: unweighted macro mean of the per-image values over all images.
* Pairing: every file in the truth folder except ``ATTRIBUTION.txt`` and
  ``LICENSE.txt`` must carry an id ``ISIC_[0-9]{7}`` in its stem; its prediction is
  the one file in the prediction folder whose stem contains the id's 7 digits
  (the ``ISIC_`` prefix is not required). For Task-2 style truths named
  ``..._attribute_<name>`` the prediction stem must also contain ``<name>``.
  No candidate or several candidates is an error; extra predictions are ignored.

Deliberate differences from the scorer, all on inputs it rejects: ``read_mask``
(``skinkeras.data.masks``) accepts RGB/RGBA/palette/16-bit masks (the scorer only takes 8-bit ``L`` and
1-bit images; pass ``strict=True`` to reject them too), errors are ``ValueError``
and ``score_mask_folders`` reports every missing prediction at once.

The Keras half (``DiceCoefficient``, ``JaccardIndex``) uses ``keras.ops`` only and
applies the same empty-mask convention on thresholded probabilities.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import ops

from skinkeras.data.masks import BINARY_THRESHOLD, read_mask

SEG_METRICS = ("dice", "jaccard", "threshold_jaccard", "accuracy", "sensitivity", "specificity")

#: 8-bit value above which a pixel is foreground (the scorer's ``image > 128``).
#: Jaccard below this scores 0 in ``threshold_jaccard`` (the scorer's 0.65).
JACCARD_THRESHOLD = 0.65

_ISIC_ID = re.compile(r"ISIC_[0-9]{7}")
_ATTRIBUTE = re.compile(r"attribute_([a-z_]+)")
# The scorer skips exactly these two names in the ground-truth folder.
_TRUTH_EXTRAS = frozenset({"ATTRIBUTION.txt", "LICENSE.txt"})
_MAX_LISTED = 10


def _binary(mask, what):
    """Boolean foreground of a bool mask or a 0-255 integer image.

    Args:
        mask: bool array (used as is) or integer array of 8-bit intensities.
        what: name used in the error message.
    """
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr > BINARY_THRESHOLD
    raise ValueError(
        f"{what}: dtype {arr.dtype} is neither bool nor 0-255 integers; "
        "threshold probabilities first (e.g. prob > 0.5)"
    )


def seg_confusion(truth: np.ndarray, pred: np.ndarray) -> tuple:
    """Pixel confusion counts (tp, fp, fn, tn) of one mask pair, as python ints.

    Integer arrays are 8-bit intensities binarised with ``> 128`` like the scorer,
    so a 0/1 integer mask reads as empty: pass bool masks for 0/1 data.

    Args:
        truth: ground-truth mask, bool or 0-255 integers.
        pred: predicted mask of the same shape, bool or 0-255 integers.
    """
    if np.shape(truth) != np.shape(pred):
        raise ValueError(
            f"truth shape {np.shape(truth)} != pred shape {np.shape(pred)}; resize the prediction"
        )
    t = _binary(truth, "truth").ravel()
    p = _binary(pred, "pred").ravel()
    if t.size == 0:
        raise ValueError("empty mask (no pixels); pass an HxW mask")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return tp, fp, fn, t.size - tp - fp - fn


def seg_scores(truth, pred) -> dict:
    """Per-image ISIC metrics (keys ``SEG_METRICS``) with the scorer's edge-case rules.

    Args:
        truth: ground-truth mask, bool or 0-255 integers.
        pred: predicted mask of the same shape, bool or 0-255 integers.
    """
    tp, fp, fn, tn = seg_confusion(truth, pred)
    union = tp + fp + fn
    jaccard = tp / union if union else 1.0
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if union else 1.0,
        "jaccard": jaccard,
        "threshold_jaccard": jaccard if jaccard >= JACCARD_THRESHOLD else 0.0,
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "sensitivity": tp / (tp + fn) if tp + fn else 1.0,
        "specificity": tn / (tn + fp) if tn + fp else 1.0,
    }


def mean_scores(per_image: list[dict]) -> dict:
    """Unweighted macro mean of per-image metrics, as plain python floats.

    Args:
        per_image: dicts holding at least the keys ``SEG_METRICS`` (extra keys are ignored).
    """
    if not per_image:
        raise ValueError("no per-image scores to average; score at least one image")
    missing = [k for k in SEG_METRICS if any(k not in row for row in per_image)]
    if missing:
        raise ValueError(f"per-image scores lack {missing}; build them with seg_scores")
    return {k: float(np.mean([row[k] for row in per_image], dtype=np.float64)) for k in SEG_METRICS}


def _listed(names):
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _pair_files(truth_dir, pred_dir):
    """Match every ground-truth file to its prediction with the scorer's rules.

    Args:
        truth_dir: folder of ground-truth masks.
        pred_dir: folder of predicted masks.
    """
    for folder in (truth_dir, pred_dir):
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder; pass the folder holding the masks")
    truth_files = [p for p in sorted(truth_dir.iterdir()) if p.name not in _TRUTH_EXTRAS]
    if not truth_files:
        raise ValueError(
            f"{truth_dir}: folder holds no ground-truth masks; "
            "point it at ISIC_xxxxxxx_segmentation.png files"
        )
    pred_files = sorted(pred_dir.iterdir())
    if not pred_files:
        raise ValueError(f"{pred_dir}: folder holds no predicted masks; write them with write_mask first")

    pairs, missing = [], []
    for truth_file in truth_files:
        found = _ISIC_ID.search(truth_file.stem)
        if not found:
            raise ValueError(
                f"{truth_file}: no ISIC id (ISIC_ + 7 digits) in the name; "
                "rename it or move it out of the folder"
            )
        image_id, number = found.group(0), found.group(0)[len("ISIC_"):]
        attribute = _ATTRIBUTE.search(truth_file.stem)
        label = image_id if attribute is None else f"{image_id}_attribute_{attribute.group(1)}"
        candidates = [
            p for p in pred_files if number in p.stem and (attribute is None or attribute.group(1) in p.stem)
        ]
        if not candidates:
            missing.append(label)
        elif len(candidates) > 1:
            raise ValueError(
                f"{pred_dir}: several predictions match {truth_file.name} "
                f"({_listed([p.name for p in candidates])}); keep exactly one file per image"
            )
        else:
            pairs.append((label, truth_file, candidates[0]))
    if missing:
        raise ValueError(
            f"{pred_dir}: no prediction for {len(missing)} ground-truth image(s): {_listed(missing)}; "
            "write one mask per id, named ISIC_xxxxxxx_segmentation.png"
        )
    return pairs


def score_mask_folders(truth_dir, pred_dir, *, strict=False) -> tuple[pd.DataFrame, dict]:
    """Score a folder of predicted masks against ground truth exactly like the ISIC scorer.

    Pairing follows the scorer (see the module docstring): the prediction for
    ``ISIC_0012345_segmentation.png`` is the single file whose stem contains
    ``0012345``; ``ISIC_0012345_segmentation.png`` is the recommended name.

    Args:
        truth_dir: folder of ground-truth masks named with their ISIC id.
        pred_dir: folder of predicted masks, one per ground-truth id.
        strict: read masks like the scorer, rejecting anything but 8-bit ``L``/1-bit images.

    Returns:
        (per-image DataFrame with columns ``image_id`` + ``SEG_METRICS`` sorted by id,
        dict of macro means as python floats).
    """
    rows = []
    for label, truth_file, pred_file in _pair_files(Path(truth_dir), Path(pred_dir)):
        truth = read_mask(truth_file, strict=strict)
        pred = read_mask(pred_file, strict=strict)
        if truth.shape != pred.shape:
            (th, tw), (ph, pw) = truth.shape, pred.shape
            raise ValueError(
                f"{pred_file}: size {pw}x{ph} differs from ground truth {truth_file} ({tw}x{th}); "
                "resize the prediction to the original image size"
            )
        rows.append({"image_id": label, **seg_scores(truth, pred)})
    frame = pd.DataFrame(rows, columns=["image_id", *SEG_METRICS])
    frame = frame.sort_values("image_id", kind="stable").reset_index(drop=True)
    return frame, mean_scores(rows)


class _PerImageOverlap(keras.metrics.Metric):
    """Mean over images of a per-image overlap score of thresholded masks.

    Args:
        threshold: a prediction pixel is foreground when ``y_pred > threshold``
            (strict, like the scorer's ``> 128``); truth is foreground when ``y_true > 0.5``.
        name: metric name.
        **kwargs: passed to ``keras.metrics.Metric`` (e.g. ``dtype``).
    """

    def __init__(self, threshold=0.5, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.score_sum = self.add_variable(shape=(), initializer="zeros", name="score_sum")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _score(self, tp, fp, fn):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the per-image scores of one batch.

        Args:
            y_true: (batch, H, W, 1) ground truth in [0, 1].
            y_pred: (batch, H, W, 1) foreground probabilities.
            sample_weight: optional per-image weights, shape (batch,); per-pixel
                weights are averaged per image.
        """
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        axes = tuple(range(1, len(y_pred.shape)))
        t = ops.cast(ops.greater(y_true, 0.5), self.dtype)
        p = ops.cast(ops.greater(y_pred, self.threshold), self.dtype)
        tp = ops.sum(t * p, axis=axes)
        fp = ops.sum((1.0 - t) * p, axis=axes)
        fn = ops.sum(t * (1.0 - p), axis=axes)
        union = tp + fp + fn
        # Both masks empty scores 1, as in the ISIC scorer; _score clamps its denominator so the
        # branch where() discards never divides by zero.
        score = ops.where(union > 0, self._score(tp, fp, fn), ops.ones_like(union))
        if sample_weight is None:
            weight = ops.ones_like(score)
        else:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
            if len(weight.shape) > 1:
                weight = ops.mean(weight, axis=tuple(range(1, len(weight.shape))))
            weight = ops.broadcast_to(weight, ops.shape(score))
        self.score_sum.assign_add(ops.sum(score * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.divide_no_nan(self.score_sum, self.count)

    def reset_state(self):
        self.score_sum.assign(ops.zeros((), dtype=self.dtype))
        self.count.assign(ops.zeros((), dtype=self.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold})
        return config


@keras.saving.register_keras_serializable(package="skinkeras")
class DiceCoefficient(_PerImageOverlap):
    """Mean per-image Dice of thresholded predictions (threshold=0.5 default) over all images seen.

    Per image Dice = 2TP / (2TP + FP + FN), and 1 when truth and prediction are
    both empty, matching the ISIC scorer.

    Args:
        threshold: prediction pixels ``> threshold`` are foreground.
        name: metric name.
        **kwargs: passed to ``keras.metrics.Metric``.
    """

    def __init__(self, threshold=0.5, name="dice", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)

    def _score(self, tp, fp, fn):
        return 2.0 * tp / ops.maximum(2.0 * tp + fp + fn, 1.0)


@keras.saving.register_keras_serializable(package="skinkeras")
class JaccardIndex(_PerImageOverlap):
    """Mean per-image Jaccard of thresholded predictions (threshold=0.5 default) over all images seen.

    Per image Jaccard = TP / (TP + FP + FN), and 1 when truth and prediction are
    both empty, matching the ISIC scorer.

    Args:
        threshold: prediction pixels ``> threshold`` are foreground.
        name: metric name.
        **kwargs: passed to ``keras.metrics.Metric``.
    """

    def __init__(self, threshold=0.5, name="jaccard", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)

    def _score(self, tp, fp, fn):
        return tp / ops.maximum(tp + fp + fn, 1.0)


@keras.saving.register_keras_serializable(package="skinkeras")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean per-class recall of argmax predictions (the ISIC 2018/2019 challenge metric).

    Accumulates a confusion matrix; classes absent from the labels seen so far
    do not count, as in the ISIC scorer.

    Args:
        num_classes: number of classes.
        name: metric name.
        **kwargs: passed to ``keras.metrics.Metric``.
    """

    def __init__(self, num_classes, name="balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                           name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch of integer labels (B,) or (B, 1) and probabilities (B, C).

        Args:
            y_true: integer class labels.
            y_pred: class probabilities or scores.
            sample_weight: optional per-sample weights (B,).
        """
        labels = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), (-1,)), "int32")
        truth = ops.one_hot(labels, self.num_classes, dtype=self.dtype)
        pred = ops.one_hot(ops.argmax(ops.convert_to_tensor(y_pred), axis=-1), self.num_classes, dtype=self.dtype)
        if sample_weight is not None:
            truth = truth * ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
        self.confusion.assign_add(ops.matmul(ops.transpose(truth), pred))

    def result(self):
        support = ops.sum(self.confusion, axis=1)
        recall = ops.divide_no_nan(ops.diagonal(self.confusion), support)
        present = ops.cast(support > 0, self.dtype)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), dtype=self.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config


PRIOR_CORRECTED = "prior_corrected"  # the metrics.json block of the balanced decision's scores
DECISION_METRICS = ("accuracy", "balanced_accuracy")  # what a decision rule changes (AUCs are rankings)


def prior_corrected(probabilities, prior):
    """Probabilities moved from the training prior to a uniform one: p(y|x) / p_train(y), renormalised per row.

    A classifier trained on epochs with class shares `prior` estimates p(y|x) under that prior; dividing by it
    and renormalising gives the posterior a uniform prior would have given (Saerens et al., Neural Computation
    2002; "logit adjustment", Menon et al., ICLR 2021). Its argmax is the Bayes decision for balanced accuracy,
    the ISIC 2018 ranking metric, and what a class-weighted classical model (the anchors) already optimises.
    Each class column is scaled by a constant, so every one-vs-rest ranking (and AUC) of an unnormalised score
    stays the same; only decisions (accuracy, balanced accuracy, top-2) change. No parameter is fitted.

    Args:
        probabilities: (N, C) probabilities.
        prior: C class shares the model was trained on (`skinkeras.data.classification.epoch_prior`).
    """
    probs = np.asarray(probabilities, np.float64)
    prior = np.asarray(prior, np.float64)
    if prior.shape != probs.shape[-1:] or (prior <= 0).any():
        raise ValueError(f"prior must hold {probs.shape[-1]} positive class shares, got {prior.tolist()}; "
                         "a class absent from training has no prior to correct")
    adjusted = probs / prior
    return adjusted / np.clip(adjusted.sum(axis=-1, keepdims=True), 1e-300, None)


def classification_scores(labels, probabilities, class_names):
    """Accuracy, balanced accuracy, one-vs-rest AUCs, top-2 accuracy and per-class precision / recall / F1.

    Balanced accuracy and the per-class AUCs are computed as the ISIC scorer
    computes them (mean recall over the classes present; sklearn's ROC AUC of
    each class column); classes without a positive have no AUC and are left
    out of `auc_macro`.

    Args:
        labels: int labels (N,).
        probabilities: (N, C) probabilities.
        class_names: C names, used as keys of the per-class entries.
    """
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probabilities, np.float64)
    pred = probs.argmax(axis=1)
    n = len(class_names)
    present = [c for c in range(n) if (labels == c).any()]
    recalls = [float((pred[labels == c] == c).mean()) for c in present]
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=list(range(n)),
                                                                     zero_division=0)
    per_class, aucs = {}, []
    for c, name in enumerate(class_names):
        truth = labels == c
        auc = float(roc_auc_score(truth, probs[:, c])) if 0 < truth.sum() < len(truth) else None
        if auc is not None:
            aucs.append(auc)
        per_class[name] = {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                           "auc": auc, "support": int(support[c])}
    top2 = np.argsort(-probs, axis=1)[:, :2]
    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auc_macro": float(np.mean(aucs)) if aucs else None,
        "top2_accuracy": float((top2 == labels[:, None]).any(axis=1).mean()),
        "images": int(len(labels)),
        "per_class": per_class,
    }
