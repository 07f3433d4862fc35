"""Figures of the run folders (matplotlib, Agg backend): training curves, confusion matrix, ROC."""

import os

import numpy as np

from skinkeras.runs import WORST_CSV, WORST_DIR


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi=100):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_history(history_csv, out_png, metric="dice"):
    """Draws loss and validation metric curves of a run.

    Args:
        history_csv: history.csv of the run.
        out_png: output PNG path.
        metric: metric suffix to plot beside the loss.
    """
    plt = _pyplot()

    from skinkeras.runs import read_history

    rows = read_history(history_csv)
    if not rows:
        return None
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in rows[0]:
            axes[0].plot(epochs, [r[key] for r in rows], style, label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in rows[0]:
        if key.endswith(metric):
            axes[1].plot(epochs, [r[key] for r in rows], "--" if key.startswith("val_") else "-", label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title(metric)
    axes[1].legend()
    return _save(fig, out_png)


def plot_confusion(labels, pred, classes, path):
    """Confusion matrix as counts and row-normalised (paper Figure 6).

    Args:
        labels: int labels.
        pred: int predictions.
        classes: class names.
        path: PNG path.
    """
    plt = _pyplot()

    n = len(classes)
    counts = np.zeros((n, n), np.int64)
    np.add.at(counts, (labels, pred), 1)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, matrix, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), classes, rotation=45)
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    return _save(fig, path)


def plot_roc(labels, probs, classes, path):
    """One-vs-rest ROC curve per class.

    Args:
        labels: int labels.
        probs: (N, C) probabilities.
        classes: class names.
        path: PNG path.
    """
    plt = _pyplot()
    from sklearn.metrics import auc, roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(classes):
        truth = labels == c
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = roc_curve(truth, probs[:, c])
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def segmentation_triptych(image, truth, pred, height=128):
    """Image | truth | prediction side by side, each mask drawn over the image with its outline.

    Args:
        image: (H, W, 3) uint8.
        truth: (H, W) bool ground truth.
        pred: (H, W) bool prediction.
        height: output height in pixels (the aspect ratio is kept).
    """
    from PIL import Image
    from scipy import ndimage

    image = np.asarray(image, np.uint8)
    panels = [image]
    for mask, colour in ((truth, (40, 200, 80)), (pred, (240, 60, 40))):
        mask = np.asarray(mask, bool)
        panel = image.astype(np.float32)
        panel[mask] = 0.6 * panel[mask] + 0.4 * np.array(colour, np.float32)
        edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, image.shape[0] // 96))
        panel[edge] = colour
        panels.append(panel.astype(np.uint8))
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    resized = [np.asarray(Image.fromarray(p).resize((width, height), Image.BILINEAR)) for p in panels]
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([resized[0], gap, resized[1], gap, resized[2]], axis=1)


class WorstImages:
    """Keeps the K lowest-scoring segmentations seen and writes them as WORST_DIR/ID.png with WORST_CSV.

    Only K small triptychs are held at any time, so it can follow a stream of any length.

    Args:
        k: how many to keep.
        score: per-image score key that orders them (lowest first).
    """

    def __init__(self, k=8, score="dice"):
        self.k = k
        self.score = score
        self.kept = []

    def add(self, image_id, image, truth, pred, scores):
        """Offers one image; keeps it when it is among the K lowest so far.

        Args:
            image_id: its id.
            image: (H, W, 3) uint8.
            truth: (H, W) bool ground truth.
            pred: (H, W) bool prediction.
            scores: its seg_scores dict.
        """
        value = float(scores[self.score])
        if len(self.kept) >= self.k and value >= self.kept[-1][0]:
            return
        self.kept.append((value, str(image_id), segmentation_triptych(image, truth, pred), dict(scores)))
        self.kept.sort(key=lambda item: (item[0], item[1]))
        del self.kept[self.k:]

    def save(self, out):
        """Writes OUT/worst/ID.png and OUT/worst.csv (image_id and scores, lowest first).

        Args:
            out: the run or evaluation folder.
        """
        import csv

        from PIL import Image

        folder = os.path.join(out, WORST_DIR)
        os.makedirs(folder, exist_ok=True)
        for _, image_id, picture, _ in self.kept:
            Image.fromarray(picture).save(os.path.join(folder, f"{image_id}.png"))
        with open(os.path.join(out, WORST_CSV), "w", newline="") as f:
            names = list(self.kept[0][3]) if self.kept else [self.score]
            writer = csv.writer(f)
            writer.writerow(["image_id", *names])
            for _, image_id, _, scores in self.kept:
                writer.writerow([image_id, *(f"{scores[n]:.6f}" for n in names)])
        return folder


def plot_reliability(tables, path):
    """Reliability diagrams side by side: accuracy against mean confidence per bin, with the bin counts.

    Args:
        tables: {title: `skinkeras.trust.calibration.reliability_bins` dict, plus "ece"} (e.g. raw, calibrated).
        path: PNG path.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.6 * len(tables), 4.8), squeeze=False)
    for ax, (title, table) in zip(axes[0], tables.items()):
        lower, upper = np.asarray(table["lower"]), np.asarray(table["upper"])
        centre, width = (lower + upper) / 2, upper - lower
        accuracy = np.array([np.nan if a is None else a for a in table["accuracy"]])
        confidence = np.array([np.nan if c is None else c for c in table["confidence"]])
        ax.bar(centre, np.nan_to_num(accuracy), width=width * 0.95, color="#4c72b0", label="accuracy")
        ax.plot(confidence, accuracy, "o", color="#dd8452", markersize=4, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        for x, n, a in zip(centre, table["count"], np.nan_to_num(accuracy)):
            if n:
                ax.text(x, min(a + 0.02, 0.97), str(n), ha="center", fontsize=6, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}: ECE {table['ece']:.3f}" if table.get("ece") is not None else title, fontsize=10)
        ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def plot_risk_coverage(curves, points, path):
    """Accuracy of the kept cases against coverage for each confidence score, with the chosen operating points.

    Args:
        curves: {score name: `skinkeras.trust.referral.risk_coverage` dict}.
        points: [{"target", "coverage", "accuracy"}] operating points on this set (thresholds chosen on val).
        path: PNG path.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, curve in curves.items():
        ax.plot(curve["coverage"], curve["accuracy"], label=f"{name}: accuracy")
        ax.plot(curve["coverage"], curve["balanced_accuracy"], "--", linewidth=0.9, label=f"{name}: balanced acc.")
    for point in points:
        if point.get("accuracy") is not None:
            ax.plot(point["coverage"], point["accuracy"], "kx", markersize=8)
            ax.annotate(f"target {point['target']:.0%}", (point["coverage"], point["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set_xlim(0, 1.01)
    ax.set_xlabel("coverage (fraction of cases kept, most confident first)")
    ax.set_ylabel("score of the kept cases")
    ax.legend(loc="lower left", fontsize=7)
    return _save(fig, path)
