"""`cls-train`: the TDBN, its Table 3 ablations and the Table 2 baselines (paper 4.2, 5, 6.1)."""

import os

import keras
import numpy as np

from skinkeras import runs
from skinkeras.classification.calibrate import fit_calibration
from skinkeras.classification.evaluate import isic_csv
from skinkeras.classification.records import load_cls_records
from skinkeras.config import ClsTrainConfig
from skinkeras.data import classification as cls_data
from skinkeras.data.metadata import MetadataEncoder
from skinkeras.data.pipeline import ClassificationDataset
from skinkeras.data.sets import dataset_classes
from skinkeras.inference import cls_arrays, predict_probabilities
from skinkeras.metrics import BalancedAccuracy, classification_scores
from skinkeras.models.contract import contract_of
from skinkeras.models.registry import build_model, get_architecture
from skinkeras.report.figures import plot_history
from skinkeras.report.html import write_run_report
from skinkeras.training import BEST, TrainingPlan, fit_run, open_run

MONITOR = "val_balanced_accuracy"


def compile_classifier(model, cfg, num_classes):
    """Cross-entropy, Adam with weight decay (paper 6.1), accuracy / balanced accuracy / top-2 metrics.

    Args:
        model: classifier with a softmax output.
        cfg: `ClsTrainConfig`.
        num_classes: number of classes.
    """
    # Weighted metrics and a loss averaged over the sample weights: an evaluation batch padded for several
    # devices weighs its padding 0 and scores like the unpadded batch (without weights nothing changes).
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, weight_decay=cfg.weight_decay or None),
        loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), BalancedAccuracy(num_classes),
                          keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2_accuracy")],
        jit_compile="auto" if cfg.jit_compile is None else cfg.jit_compile,
    )
    return model


def split_frame(df, cfg):
    """The seeded `cfg.limit` sample of the records and its train / val / test split (what a new run uses).

    Args:
        df: records from `load_cls_records`.
        cfg: `ClsTrainConfig` (limit, fractions, split, seed).
    """
    if cfg.limit:
        df = df.iloc[np.sort(np.random.default_rng(cfg.seed).permutation(len(df))[: cfg.limit])]
        df = df.reset_index(drop=True)
    return cls_data.split_records(df, tuple(cfg.fractions), by=cfg.split, seed=cfg.seed)


def split_records(run, needs_segmented):
    """The run's records with their split subset: split.csv on resume, else a new seeded split (written).

    Args:
        run: the opened `Run`.
        needs_segmented: whether the model reads segmented images.

    Returns:
        (records with `subset`, problems [(path, reason)]).
    """
    cfg = run.cfg
    df, problems = load_cls_records(cfg, needs_segmented)
    split_csv = run.path(runs.SPLIT_CSV)
    if run.resume and os.path.exists(split_csv):
        df, more = cls_data.apply_split(df, cls_data.read_split(split_csv))
        return df, list(problems) + list(more)
    df = split_frame(df, cfg)
    cls_data.write_split(df, split_csv)
    runs.write_skipped(run.dir, problems)
    return df, problems


def train_classification(cfg: ClsTrainConfig, resume=False, resume_epochs=None, progress=True, overwrite=False):
    """Trains a TDBN variant or baseline classifier and writes its run folder; returns the folder.

    Writes config.json, env.json, classes.json, metadata_encoder.json, split.csv
    (train / val / test, lesion-grouped by default), skipped.csv,
    class_distribution.png (before / after balancing), last.keras, best.keras
    (best validation balanced accuracy, no optimizer state), history.csv,
    training_curves.png, metrics.json (validation scores of best.keras), the
    validation predictions in the ISIC format (val_predictions.csv,
    val_ground_truth.csv), calibration.json (temperature and referral thresholds of best.keras fitted on the
    validation split, `skinkeras.classification.calibrate`) and report.html.

    Args:
        cfg: `ClsTrainConfig`.
        resume: continue the run in `cfg.out` from its last.keras with its saved config and split.
        resume_epochs: with resume, the new total number of epochs.
        progress: show progress bars.
        overwrite: replace a run that `cfg.out` already holds.
    """
    if not resume and cfg.data_dir is None and cfg.images is None and not cfg.cache:
        raise ValueError("Give --data-dir DIR (official layout) and/or --images DIR (or --cache CACHE)")
    with open_run(cfg, "cls-train", resume, resume_epochs, overwrite) as run:
        return _fit(run, progress)


def _fit(run, progress):
    cfg = run.cfg
    resume = run.resume
    arch = get_architecture(cfg.arch, cfg.task)
    classes = dataset_classes(cfg.dataset)
    runs.write_json(run.path("classes.json"), {"dataset": cfg.dataset, "classes": list(classes)})

    df, _ = split_records(run, arch.needs_segmented)
    encoder = MetadataEncoder().fit(df[df.subset == "train"])
    runs.write_json(run.path("metadata_encoder.json"), encoder.to_dict())

    size = (cfg.image_size, cfg.image_size)
    if progress:
        print(f"{'Reading' if cfg.cache else 'Loading'} {len(df)} images at {size[0]}x{size[1]} "
              f"({', '.join(arch.inputs)}){' from the cache ' + cfg.cache if cfg.cache else ''}")
    arrays, kept, skipped = cls_arrays(df, encoder, size, arch.inputs, progress, cfg.cache, cfg.dataset)
    if not resume:
        runs.write_skipped(run.dir, skipped)
    labels = df.label.to_numpy(np.int64)
    subset = df.subset.to_numpy()
    train_idx = np.intersect1d(kept, np.flatnonzero(subset == "train"))
    val_idx = np.intersect1d(kept, np.flatnonzero(subset == "val"))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"Empty training or validation split ({len(train_idx)} / {len(val_idx)} images)")

    def plan(epoch):
        if not cfg.balance:
            return train_idx
        positions, _ = cls_data.balance_plan(labels[train_idx], cfg.balance_cap, cfg.balance_floor,
                                             seed=cfg.seed + epoch)
        return train_idx[positions]

    cls_data.plot_class_distribution(cls_data.class_counts(labels[train_idx], len(classes)),
                                     cls_data.class_counts(labels[plan(0)], len(classes)), classes,
                                     run.path("class_distribution.png"),
                                     title=f"{cfg.dataset} training split before / after balancing")

    def datasets(model):
        contract = contract_of(model)
        common = {"image_inputs": contract.image_inputs}
        train = ClassificationDataset(arrays, labels, contract.inputs, cfg.batch_size, augment=True, shuffle=True,
                                      plan=plan, seed=cfg.seed, flip_prob=cfg.flip_prob,
                                      max_rotation=cfg.max_rotation, **common)
        val = ClassificationDataset(arrays, labels, contract.inputs, cfg.batch_size, plan=lambda epoch: val_idx,
                                    **common)
        return train, val

    def evaluate(best_model):
        probs = predict_probabilities(best_model, arrays, labels, val_idx, cfg.batch_size)
        # In the ISIC format, so the report draws the validation confusion matrix and ROC from files.
        ids = df.image_id.to_numpy()[val_idx]
        isic_csv(ids, probs, classes, cfg.dataset, run.path(runs.VAL_PREDICTIONS))
        isic_csv(ids, np.eye(len(classes))[labels[val_idx]], classes, cfg.dataset, run.path(runs.VAL_GROUND_TRUTH))
        # The temperature and referral thresholds of best.keras, on the split that chose it (cls-calibrate redoes it).
        fit_calibration(run.dir, run.path(BEST), labels[val_idx], probs)
        return {"val": classification_scores(labels[val_idx], probs, classes), "split": cfg.split,
                "subset_images": {s: int(np.isin(np.flatnonzero(subset == s), kept).sum())
                                  for s in ("train", "val", "test")}}

    build = lambda: compile_classifier(  # noqa: E731
        build_model(cfg, num_classes=len(classes), **({"num_features": encoder.n_features}
                                                      if arch.needs_metadata else {})), cfg, len(classes))
    return fit_run(run, TrainingPlan(build=build, datasets=datasets, monitor=MONITOR, evaluate=evaluate,
                                     curve_metric="accuracy", draw_curves=plot_history,
                                     write_report=write_run_report, info={"model": cfg.arch}), progress)
