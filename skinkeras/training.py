"""The one fit skeleton of both training stages: run folder, restore-or-build, callbacks, checkpoints, metrics.

A trainer (segmentation, classification) opens its run with `open_run`,
loads its data, and hands `fit_run` a `TrainingPlan`: how to build the
compiled model, its datasets, the monitored metric and how to score the best
checkpoint. Everything else (resume from last.keras, atomic best.keras /
last.keras, history.csv, training_curves.png, metrics.json with size and
time, report.html) lives here once; the drawing functions themselves come
with the plan, since `skinkeras.report` is a stage above this module.
"""

import csv
import dataclasses
import errno
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from skinkeras import distribute, runs
from skinkeras.config import from_json, to_json
from skinkeras.models.common import model_size
from skinkeras.models.contract import export_model
from skinkeras.models.layout import data_format_scope
from skinkeras.precision import precision_scope
from skinkeras.runs import read_history

CONFIG_JSON = "config.json"
HISTORY_CSV = "history.csv"
BEST = "best.keras"
LAST = "last.keras"
CURVES_PNG = "training_curves.png"
METRICS_JSON = "metrics.json"


def save_atomic(model, path, **kwargs):
    """Saves a model through a temporary file so an interrupted save never destroys the previous one.

    A failed save removes its temporary file; a full disk raises `runs.DiskFullError` naming the folder
    and the space the file needs, and the previous checkpoint stays as it was.

    Args:
        model: keras model.
        path: target `.keras` path.
        **kwargs: passed to `model.save`.
    """
    tmp = path + ".tmp.keras"
    try:
        model.save(tmp, **kwargs)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _is_disk_full(exc):
            # weights, plus Adam's two moments in last.keras
            raise runs.disk_full(path, model.count_params() * 4 * 3) from None
        raise


def _is_disk_full(exc):
    """Whether an exception (or one it wraps: h5py and zipfile re-raise) comes from a full disk."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def step_schedule(learning_rate, step_epochs, factor):
    """Learning rate multiplied by `factor` every `step_epochs` epochs (paper: halved every 4 / 3).

    Args:
        learning_rate: initial rate.
        step_epochs: epochs per step.
        factor: multiplier per step.
    """
    return lambda epoch, lr=None: float(learning_rate * factor ** (epoch // max(1, step_epochs)))


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: saves last.keras (with optimizer, for --resume), best.keras, and a history row.

    Args:
        run_dir: run folder.
        monitor: log key whose maximum selects best.keras.
        best: best monitored value of earlier epochs (for resumed runs).
        export: maps the training model to the model stored as best.keras.
    """

    def __init__(self, run_dir, monitor, best=-math.inf, export=None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.best = best
        self.export = export or (lambda m: m)
        self.epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.monitor not in logs:
            raise KeyError(f"monitor {self.monitor!r} not in logs {sorted(logs)}")
        value = float(logs[self.monitor])
        if value > self.best:
            self.best = value
            save_atomic(self.export(self.model), os.path.join(self.run_dir, BEST))
        save_atomic(self.model, os.path.join(self.run_dir, LAST))
        row = {"epoch": epoch + 1, "seconds": round(time.time() - self.epoch_start, 2)}
        row.update({k: float(v) for k, v in sorted(logs.items())})
        path = os.path.join(self.run_dir, HISTORY_CSV)
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class EpochSeeds(keras.callbacks.Callback):
    """Re-seeds every random source at the start of each epoch from (seed, epoch).

    Keras does not save the seed generators' states (dropout masks) in a
    checkpoint, and the backends' global generators restart from the run's
    seed in a new process; seeding each epoch from (seed, epoch) gives a run
    resumed at epoch k the same random stream from epoch k on as a run that
    was never interrupted. (Data order, balancing and augmentation are seeded
    by (seed, epoch) already.)

    Args:
        seed: the run's seed.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        rng = np.random.default_rng((self.seed, epoch))
        keras.utils.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        for variable in self.model.variables:
            if variable.path.endswith("seed_generator_state"):
                variable.assign(np.array([rng.integers(0, 2**31 - 1), 0]).astype(variable.dtype))


@dataclass
class Run:
    """An opened run folder.

    Args:
        dir: the folder.
        cfg: the resolved config (the saved one on resume, with the new epoch total).
        resume: whether the run continues an earlier one.
    """

    dir: str
    cfg: object
    resume: bool
    lock: object = None
    placement: distribute.Placement = None
    target: str = None

    def __post_init__(self):
        self.placement = self.placement or distribute.current()
        self.target = self.target or self.dir

    @property
    def scratch(self):
        """Whether this is a worker process's private folder (only process 0 writes the run folder)."""
        return self.target != self.dir

    def path(self, name):
        """Path of a file in the run folder."""
        return os.path.join(self.dir, name)

    @property
    def history(self):
        """history.csv rows written so far."""
        return read_history(self.path(HISTORY_CSV))

    def close(self):
        """Releases the run folder's lock (a worker's private folder is removed)."""
        if self.lock is not None:
            self.lock.release()
        if self.scratch:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_run(cfg, command, resume=False, resume_epochs=None, overwrite=False):
    """Creates or reopens a run folder, locks it, writes config.json and env.json, seeds everything.

    On resume the run's saved config is used (only the epoch total and the
    device count may change) and env.json gains this process's environment
    under "resumes". Use the returned `Run` as a context manager: leaving it
    releases the lock.

    The data-parallel placement (`cfg.devices`, and the processes of Keras'
    KERAS_DISTRIBUTION_* variables) is set here, before any model exists.
    Under several processes only process 0 writes the run folder; the others
    work in a private folder (removed on close) that starts, on resume, from
    the run's config, split, history and last.keras.

    Args:
        cfg: a `TrainConfig` with `out`, `epochs` and `seed`.
        command: CLI command name (for the default folder name).
        resume: continue the run in `cfg.out`.
        resume_epochs: with resume, the new total number of epochs.
        overwrite: replace a run that `cfg.out` already holds.
    """
    placement = distribute.configure(cfg.devices)
    if placement.num_processes > 1 and not cfg.out:
        raise ValueError(f"{placement.num_processes} processes need --out RUN, the same folder on every process")
    if not placement.chief:
        return _open_worker_run(cfg, resume, resume_epochs, placement)
    run_dir = runs.prepare_run_dir(cfg.out, command, resume, overwrite)
    lock = runs.RunLock(run_dir).acquire()
    try:
        if resume:
            saved = from_json(type(cfg), os.path.join(run_dir, CONFIG_JSON))
            cfg = dataclasses.replace(saved, epochs=resume_epochs or saved.epochs, devices=cfg.devices)
        cfg = dataclasses.replace(cfg, out=run_dir)
        to_json(cfg, os.path.join(run_dir, CONFIG_JSON))
        runs.record_environment(run_dir, {**runs.environment(cfg.seed), "placement": placement.as_dict()}, resume)
    except BaseException:
        lock.release()
        raise
    keras.utils.set_random_seed(cfg.seed)
    return Run(run_dir, cfg, resume, lock, placement)


def _open_worker_run(cfg, resume, resume_epochs, placement):
    """A process other than 0: the same config, seed and (on resume) state, in a private folder."""
    target = os.path.abspath(cfg.out)
    scratch = tempfile.mkdtemp(prefix=f"skinkeras-process{placement.process_id}-")
    if resume:
        if not os.path.isfile(os.path.join(target, CONFIG_JSON)):
            raise FileNotFoundError(f"--resume: {target} has no {CONFIG_JSON} (is --out the same on every process?)")
        for name in (CONFIG_JSON, runs.SPLIT_CSV, HISTORY_CSV, LAST):
            if os.path.exists(os.path.join(target, name)):
                shutil.copy2(os.path.join(target, name), os.path.join(scratch, name))
        saved = from_json(type(cfg), os.path.join(scratch, CONFIG_JSON))
        cfg = dataclasses.replace(saved, epochs=resume_epochs or saved.epochs, devices=cfg.devices)
    cfg = dataclasses.replace(cfg, out=scratch)
    to_json(cfg, os.path.join(scratch, CONFIG_JSON))
    keras.utils.set_random_seed(cfg.seed)
    return Run(scratch, cfg, resume, None, placement, target=target)


@dataclass
class TrainingPlan:
    """What a trainer supplies to `fit_run`.

    Args:
        build: () -> a new compiled model.
        datasets: model -> (training dataset, validation dataset); the training one has `set_epoch`.
        monitor: log key whose maximum selects best.keras.
        evaluate: best model -> dict of validation scores for metrics.json.
        curve_metric: metric suffix drawn beside the loss in training_curves.png.
        draw_curves: (history.csv, training_curves.png, curve_metric) -> None
            (`skinkeras.report.figures.plot_history`).
        write_report: run folder -> None, never raising (`skinkeras.report.html.write_run_report`).
        export: training model -> the model stored as best.keras.
        info: extra metrics.json entries.
    """

    build: Callable
    datasets: Callable
    monitor: str
    evaluate: Callable
    curve_metric: str
    draw_curves: Callable
    write_report: Callable
    export: Callable = export_model
    info: dict = dataclasses.field(default_factory=dict)


def restore_or_build(run, build):
    """Returns (model, history rows): the run's last.keras on resume, else `build()` and no history.

    A restored model has its optimizer state, its precision and every BatchNorm momentum it was built
    with (they are saved in the file); a new one is built under the run's `precision` policy.

    Args:
        run: the `Run`.
        build: callable returning a new compiled model.
    """
    history = run.history if run.resume else []
    last = run.path(LAST)
    if history and os.path.exists(last):
        return keras.models.load_model(last, safe_mode=True), history
    with precision_scope(run.cfg.precision), data_format_scope(run.cfg.data_format):
        return build(), []


def fit_run(run, plan, progress=True):
    """Trains (or resumes) a run to its epoch total and writes its checkpoints, curves and metrics.json.

    The datasets are laid out for the run's placement (`AugmentedDataset.distribute`). Under several
    processes, a process other than 0 returns after the last epoch, and process 0 scores best.keras alone.

    Args:
        run: the `Run` from `open_run`.
        plan: the `TrainingPlan`.
        progress: show Keras' progress bar.

    Returns:
        the run folder.
    """
    cfg = run.cfg
    placement = run.placement
    model, history = restore_or_build(run, plan.build)
    best = max((r.get(plan.monitor, -math.inf) for r in history), default=-math.inf)
    train_ds, val_ds = plan.datasets(model)
    train_ds.distribute(placement, training=True)
    val_ds.distribute(placement, training=False)
    train_ds.set_epoch(len(history))
    callbacks = [
        keras.callbacks.LearningRateScheduler(step_schedule(cfg.learning_rate, cfg.lr_step_epochs, cfg.lr_factor)),
        EpochSeeds(cfg.seed),
        # In every process: saving a distributed model takes part in collectives, so all processes save
        # together (the others into their private folders).
        RunRecorder(run.dir, plan.monitor, best, export=plan.export),
    ]
    if len(history) < cfg.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=len(history),
                  callbacks=callbacks, verbose=1 if progress and placement.chief else 0)
    if not placement.chief:
        return run.target
    if placement.num_processes > 1:
        # The others are done; scoring best.keras needs no collective, so process 0 does it on its own device.
        distribute.reset()
    plan.draw_curves(run.path(HISTORY_CSV), run.path(CURVES_PNG), plan.curve_metric)

    best_model = keras.models.load_model(run.path(BEST), compile=False, safe_mode=True)
    rows = run.history
    best_row = max(rows, key=lambda r: r.get(plan.monitor, -math.inf))
    metrics = {
        **plan.evaluate(best_model),
        "monitor": plan.monitor,
        "best_epoch": int(best_row["epoch"]),
        "epochs_run": len(rows),
        "train_minutes": round(sum(r.get("seconds", 0.0) for r in rows) / 60, 2),
        "arch": cfg.arch,
        "backend": keras.backend.backend(),
        "precision": cfg.precision,
        "devices": run.placement.devices,
        "processes": run.placement.num_processes,
        **plan.info,
        **model_size(best_model),
    }
    runs.write_json(run.path(METRICS_JSON), metrics)
    plan.write_report(run.dir)
    return run.dir
