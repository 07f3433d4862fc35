"""Figures of the run folders (matplotlib, Agg backend): training curves, confusion matrix, ROC."""

import numpy as np


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
