"""Run folders: every command writes its config, environment, split, outputs and report into one folder."""

import csv
import datetime
import errno
import json
import os
import platform
import shutil
import socket
import subprocess
import sys


def default_run_dir(command):
    """Returns runs/<command>-<timestamp>.

    Args:
        command: CLI command name.
    """
    return os.path.join("runs", f"{command}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def git_commit():
    """The git commit of the code being run ("unknown" outside a git checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "unknown"
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(seed=None):
    """Seed, backend, versions and commit of this process, for the run record.

    Args:
        seed: the run's seed.
    """
    import keras  # here, so that config (Keras-free) can read run files through this module

    return {
        "seed": seed,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def file_sha256(path):
    """Hex SHA-256 of a file's bytes (what ties a run's calibration to the model file it was fitted on).

    Args:
        path: the file.
    """
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, data):
    """Writes `data` as indented JSON.

    Args:
        path: output file.
        data: JSON-serialisable object.
    """
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=float)


def read_json(path, writer=None):
    """Reads a JSON file of a run folder; a missing or damaged one raises one line naming it and the fix.

    Args:
        path: input file (config.json, classes.json, metadata_encoder.json, metrics.json, ...).
        writer: the command that writes it, for the message (default: `WRITTEN_BY` by file name).

    Raises:
        FileNotFoundError: the file is missing (`run_file_error`).
        ValueError: it is not valid JSON (`run_file_error`).
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise run_file_error(path, writer=writer) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise run_file_error(path, exc, writer) from None


def read_csv(path, columns=(), writer=None, **kwargs):
    """Reads a CSV file of a run folder with pandas; missing, unparsable or incomplete: one line naming it.

    Values are read as strings (`dtype=str`, empty cells stay ""), unless `kwargs` say otherwise.

    Args:
        path: input file (split.csv, history.csv, ...).
        columns: columns it must have.
        writer: the command that writes it, for the message (default: `WRITTEN_BY` by file name).
        **kwargs: more `pandas.read_csv` arguments.

    Raises:
        FileNotFoundError: the file is missing (`run_file_error`).
        ValueError: it cannot be parsed or lacks one of `columns` (`run_file_error`).
    """
    import pandas as pd

    try:
        df = pd.read_csv(path, **{"dtype": str, "keep_default_na": False, **kwargs})
    except FileNotFoundError:
        raise run_file_error(path, writer=writer) from None
    except ValueError as exc:  # pandas' ParserError and EmptyDataError, UnicodeDecodeError
        raise run_file_error(path, exc, writer) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise run_file_error(path, f"no column {', '.join(missing)}", writer)
    return df


def write_skipped(run_dir, skipped, name="skipped.csv"):
    """Lists the inputs a command left out, and why, in the run folder (appending across resumes).

    Args:
        run_dir: run folder.
        skipped: list of (path, reason).
        name: file name in the run folder.
    """
    if not skipped:
        return None
    path = os.path.join(run_dir, name)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["path", "reason"])
        writer.writerows(skipped)
    return path


# Names in a run folder that several modules read or write.
REPORT_HTML = "report.html"
SPLIT_CSV = "split.csv"
VAL_PREDICTIONS = "val_predictions.csv"
VAL_GROUND_TRUTH = "val_ground_truth.csv"
WORST_DIR = "worst"
WORST_CSV = "worst.csv"
# A classifier run's temperature and referral thresholds, fitted on its validation split.
CALIBRATION_JSON = "calibration.json"
# An evaluation's lesion id per scored image, so paired comparisons resample the same lesions.
LESIONS_CSV = "lesions.csv"

# Who writes each run file that is read back, named when one is missing or damaged (`run_file_error`).
TRAINING = "seg-train / cls-train"
WRITTEN_BY = {"config.json": TRAINING, SPLIT_CSV: TRAINING, "history.csv": TRAINING, "env.json": "every command",
              "classes.json": "cls-train", "metadata_encoder.json": "cls-train", CALIBRATION_JSON: "cls-calibrate"}


def run_file_error(path, reason=None, writer=None):
    """The one-line error of a run file read back: missing (`reason` None) or damaged (`reason` says how).

    A damaged file: `ValueError: RUN/config.json is damaged (Unterminated string starting at: line 2 column
    15); restore it from a copy or train the run again`.

    Args:
        path: the file.
        reason: what is wrong with it (an exception or text), or None when it is missing.
        writer: the command that writes it (default: `WRITTEN_BY` by file name).

    Returns:
        `FileNotFoundError` (missing) or `ValueError` (damaged), to raise.
    """
    writer = writer or WRITTEN_BY.get(os.path.basename(path))
    if writer in (TRAINING, "cls-train"):
        redo = "train the run again"
    else:
        redo = f"run {writer} again" if writer else "run the command that made its folder again"
    if reason is None:
        return FileNotFoundError(f"{path} is missing ({writer or 'its command'} writes it); give the right folder "
                                 f"or {redo}")
    reason = " ".join(str(reason).split()) or type(reason).__name__
    return ValueError(f"{path} is damaged ({reason}); restore it from a copy or {redo}")


# Files that mean a run folder holds finished work (training started and wrote something worth keeping).
FINISHED_WORK = ("history.csv", "last.keras", "best.keras", "metrics.json")
# What a fresh start (--overwrite) removes: the files a run writes.
RUN_FILES = FINISHED_WORK + ("config.json", "env.json", SPLIT_CSV, "skipped.csv", "classes.json",
                             "metadata_encoder.json", "training_curves.png", "class_distribution.png",
                             VAL_PREDICTIONS, VAL_GROUND_TRUTH, WORST_CSV, REPORT_HTML, CALIBRATION_JSON)
# Folders a run writes, removed with it.
RUN_FOLDERS = (WORST_DIR,)


def prepare_run_dir(out, command, resume=False, overwrite=False):
    """Creates (or, with resume, reopens) a run folder and returns its path.

    A folder that holds finished work is never reused without `resume` (continue
    it) or `overwrite` (remove its run files and start again).

    Args:
        out: requested folder, or None for runs/<command>-<timestamp>.
        command: CLI command name.
        resume: the folder must exist and hold an earlier run of this command.
        overwrite: start afresh in a folder that holds a run.
    """
    run_dir = out or default_run_dir(command)
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it: give one of them")
    if resume:
        if not os.path.isfile(os.path.join(run_dir, "config.json")):
            raise FileNotFoundError(f"--resume: {run_dir} holds no earlier run (no config.json); give its --out")
    elif any(os.path.exists(os.path.join(run_dir, name)) for name in FINISHED_WORK):
        if not overwrite:
            # A folder left by a start that failed before training (bad data path, say) may be reused.
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                                  "replace it, or another --out")
        RunLock(run_dir).check_free()
        for name in RUN_FILES:
            path = os.path.join(run_dir, name)
            if os.path.isfile(path):
                os.remove(path)
        for name in RUN_FOLDERS:
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def record_environment(run_dir, env, resume=False):
    """Writes env.json; a resume appends its environment (command, versions, time) under "resumes".

    Args:
        run_dir: run folder.
        env: `environment(...)` of this process.
        resume: this process continues the run.
    """
    path = os.path.join(run_dir, "env.json")
    if resume and os.path.isfile(path):
        first = read_json(path)
        first.setdefault("resumes", []).append(env)
        env = first
    write_json(path, env)


LOCK_FILE = ".lock"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLockedError(FileExistsError):
    """Another live process writes the run folder."""


class RunLock:
    """An exclusive lock on a run folder: a lock file holding the writer's PID and host.

    A second writer is refused with one line naming the holder; a lock left by a
    process that no longer runs on this host (kill -9, power loss) is stale and
    is taken over.

    Args:
        run_dir: the run folder.
    """

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.held = False

    def holder(self):
        """The live process holding the lock ({pid, host, since}), or None (free or stale)."""
        try:
            with open(self.path) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            return None
        same_host = holder.get("host") == socket.gethostname()
        if same_host and (int(holder.get("pid", -1)) == os.getpid() or not _pid_alive(int(holder.get("pid", -1)))):
            return None
        return holder

    def check_free(self):
        """Raises `RunLockedError` when another live process holds the lock."""
        holder = self.holder()
        if holder is not None:
            raise RunLockedError(f"{self.run_dir} is in use by process {holder.get('pid')} on {holder.get('host')} "
                                 f"(since {holder.get('since')}); wait for it to finish or use another --out")

    def acquire(self):
        """Takes the lock (or raises `RunLockedError`); returns self."""
        os.makedirs(self.run_dir, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now().isoformat(timespec="seconds")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self.check_free()
                try:
                    os.remove(self.path)  # stale: its process is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise RunLockedError(f"Could not lock {self.run_dir}: another process keeps taking it")

    def release(self):
        """Removes the lock file if this object holds it."""
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


class DiskFullError(OSError):
    """The disk filled up while writing into a run folder; the message says how much space is needed."""


def disk_full(path, needed_bytes=None):
    """A `DiskFullError` naming the folder, its free space and, when known, the space needed.

    Args:
        path: the file that could not be written.
        needed_bytes: its expected size.
    """
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free / 2**20
    need = f"about {needed_bytes / 2**20:.0f} MB" if needed_bytes else "more space"
    return DiskFullError(errno.ENOSPC, f"No space left on device writing {path}: it needs {need} in {folder} "
                                       f"({free:.0f} MB free); free space, then continue with --resume")


def read_history(path):
    """Returns the rows of a run's history.csv as dicts of floats ([] when absent).

    Args:
        path: history.csv path.

    Raises:
        ValueError: the file is damaged (`run_file_error`).
    """
    if not os.path.exists(path):
        return []
    rows = read_csv(path, columns=("epoch",)).to_dict("records")
    try:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in rows]
    except ValueError as exc:  # a cell that is no number
        raise run_file_error(path, exc) from None
