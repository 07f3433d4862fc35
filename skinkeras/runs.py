"""Run folders: every command writes its config, environment, split, outputs and report into one folder."""

import csv
import datetime
import json
import os
import platform
import subprocess
import sys

import keras


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


def write_json(path, data):
    """Writes `data` as indented JSON.

    Args:
        path: output file.
        data: JSON-serialisable object.
    """
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=float)


def read_json(path):
    """Reads a JSON file.

    Args:
        path: input file.
    """
    with open(path) as f:
        return json.load(f)


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


def prepare_run_dir(out, command, resume=False):
    """Creates (or, with resume, reopens) a run folder and returns its path.

    Args:
        out: requested folder, or None for runs/<command>-<timestamp>.
        command: CLI command name.
        resume: the folder must exist and hold an earlier run of this command.
    """
    run_dir = out or default_run_dir(command)
    if resume:
        if not os.path.isfile(os.path.join(run_dir, "config.json")):
            raise FileNotFoundError(f"--resume: {run_dir} holds no earlier run (no config.json); give its --out")
    elif any(os.path.exists(os.path.join(run_dir, name)) for name in ("history.csv", "last.keras", "metrics.json")):
        # A folder left by a start that failed before training (bad data path, say) may be reused.
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or another --out")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def read_history(path):
    """Returns the rows of a run's history.csv as dicts of floats ([] when absent).

    Args:
        path: history.csv path.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
