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
