"""Speed benchmark of the segmentation models: build, first-step, train-step and predict times per backend.

Timing lives here, in a command that writes a table, and never in tests:
test machines are too noisy for timed assertions.
"""

import argparse
import csv
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

BACKENDS = ("jax", "tensorflow", "torch")
FIELDS = ("backend", "devices", "arch", "encoder", "image_size", "batch_size", "build_s", "first_step_s", "step_s",
          "train_img_per_s", "predict_s", "params", "size_mb", "status")
TIMING_FIELDS = ("build_s", "first_step_s", "step_s", "train_img_per_s", "predict_s", "params", "size_mb")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _row(backend, arch, encoder, image_size, batch_size, status, devices=1, **values):
    """One result row with every field present (missing measurements are None).

    Args:
        backend: Keras backend name.
        arch: segmentation architecture.
        encoder: encoder name.
        image_size: square input size.
        batch_size: images per step.
        status: "ok" or why the row has no measurements.
        devices: data-parallel devices the global batch is split over.
        **values: measured fields.
    """
    row = {name: None for name in FIELDS}
    row.update(backend=backend, devices=devices, arch=arch, encoder=encoder, image_size=image_size,
               batch_size=batch_size, status=status, **values)
    return row


def _timed(fn):
    """Runs `fn()` and returns (result, seconds).

    Args:
        fn: zero-argument callable.
    """
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _measure(arch, encoder, image_size, batch_size, steps):
    """Measures one model in this process's backend; returns the row's measured fields.

    Args:
        arch: segmentation architecture.
        encoder: encoder name.
        image_size: square input size.
        batch_size: images per step.
        steps: timed train steps and predict batches after the first (compiling) one.
    """
    # Imported here so `import skinkeras.bench` stays cheap for the CLI.
    from skinkeras.config import SegTrainConfig
    from skinkeras.models.common import model_size
    from skinkeras.models.contract import export_model
    from skinkeras.models.registry import build_model
    from skinkeras.segmentation.train import compile_segmentation

    keras.utils.set_random_seed(0)
    cfg = SegTrainConfig(arch=arch, encoder=encoder, weights="none", image_size=image_size, batch_size=batch_size)
    model, build_s = _timed(lambda: build_model(cfg))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch_size, image_size, image_size, 3)).astype("float32")
    # Deep-supervision heads may have their own shapes, so each target follows its output.
    y = {name: rng.integers(0, 2, (batch_size, *tensor.shape[1:])).astype("float32")
         for name, tensor in model.output.items()}

    # train_on_batch only: on JAX, mixing it with fit would compile the train step twice.
    _, first_step_s = _timed(lambda: (compile_segmentation(model, cfg), model.train_on_batch(x, y)))
    step_times = [_timed(lambda: model.train_on_batch(x, y))[1] for _ in range(steps)]
    step_s = float(np.mean(step_times))

    infer = export_model(model)
    infer.predict_on_batch(x)  # compiles; not part of the per-batch mean
    predict_s = float(np.mean([_timed(lambda: infer.predict_on_batch(x))[1] for _ in range(steps)]))

    return {
        "build_s": round(build_s, 3),
        "first_step_s": round(first_step_s, 3),
        "step_s": round(step_s, 4),
        "train_img_per_s": round(batch_size / step_s, 2),
        "predict_s": round(predict_s, 4),
        **model_size(model),
    }


def _measure_here(backend, archs, encoders, image_size, batch_size, steps, devices=1):
    """Rows for every arch x encoder in this process (a failing model becomes an error row).

    Args:
        backend: this process's Keras backend.
        archs: architectures.
        encoders: encoder names.
        image_size: square input size.
        batch_size: images per step (the global batch, split over `devices`).
        steps: timed steps per model.
        devices: data-parallel devices (`skinkeras.distribute`).
    """
    from skinkeras import distribute

    rows = []
    try:
        distribute.configure(devices).check_batch(batch_size)
    except ValueError as e:
        return [_row(backend, arch, encoder, image_size, batch_size, f"error: {e}", devices)
                for arch in archs for encoder in encoders]
    for arch in archs:
        for encoder in encoders:
            try:
                values = _measure(arch, encoder, image_size, batch_size, steps)
                rows.append(_row(backend, arch, encoder, image_size, batch_size, "ok", devices, **values))
            except Exception as e:  # one broken model should not lose the others' measurements
                rows.append(_row(backend, arch, encoder, image_size, batch_size, f"error: {type(e).__name__}: {e}",
                                 devices))
            # Frees the model's graph and memory before the next one is built.
            keras.backend.clear_session()
            gc.collect()
    return rows


def _measure_subprocess(backend, archs, encoders, image_size, batch_size, steps, devices=1):
    """Rows measured by `python -m skinkeras.bench --json` under KERAS_BACKEND=`backend`.

    Args:
        backend: Keras backend for the child process.
        archs: architectures.
        encoders: encoder names.
        image_size: square input size.
        batch_size: images per step.
        steps: timed steps per model.
        devices: data-parallel devices in the child.
    """
    cmd = [sys.executable, "-m", "skinkeras.bench", "--json", "--archs", *archs, "--encoders", *encoders,
           "--image-size", str(image_size), "--batch-size", str(batch_size), "--steps", str(steps),
           "--devices", str(devices)]
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=pythonpath)
    if backend == "jax" and devices > 1:
        env.setdefault("JAX_NUM_CPU_DEVICES", str(devices))  # on a CPU-only machine: N host devices
    proc = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            reason = f"unreadable child output: {lines[-1][:200]}"
    else:
        tail = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = f"exit {proc.returncode}: {tail[-1][:200] if tail else 'no output'}"
    return [_row(backend, arch, encoder, image_size, batch_size, f"error: subprocess {reason}", devices)
            for arch in archs for encoder in encoders]


def _format(value):
    """Markdown cell text; None becomes a dash.

    Args:
        value: cell value.
    """
    return "-" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows):
    """Rows as a markdown table with the `FIELDS` columns.

    Args:
        rows: result dicts.
    """
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(_format(row.get(name)) for name in FIELDS) + " |" for row in rows]
    return "\n".join(lines)


def write_results(rows, out):
    """Writes `out`/bench.csv and `out`/bench.md; returns their paths.

    Args:
        rows: result dicts.
        out: output folder (created if missing).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "bench.csv", out / "bench.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(markdown_table(rows) + "\n")
    return csv_path, md_path


def bench_segmentation(archs=("deep_unet",), encoders=("efficientnetb3",), image_size=224, batch_size=8, steps=3,
                       backends=None, out=None, echo=print, devices=(1,), in_process=False):
    """Measures build, compile-and-first-step, train-step and predict speed of segmentation models; returns rows.

    Models are built with random weights (weights=None), compiled like training
    (`compile_segmentation`) and trained on random 0-255 images and binary masks.

    Args:
        archs: architectures (see `SEG_ARCHS`).
        encoders: encoder names; every arch is measured with every encoder.
        image_size: square input size (multiple of 32).
        batch_size: images per train step and predict batch.
        steps: timed train steps and predict batches after the first (compiling) one.
        backends: backend names or a comma-separated string; None = the current backend only. Other
            backends run in a `python -m skinkeras.bench --json` subprocess, since Keras fixes the
            backend per process; an unknown or uninstalled one gives a row with that status.
        out: folder for bench.csv and bench.md (nothing written when None).
        echo: called with the markdown table.
        devices: data-parallel device counts, one row each (the batch is the global batch). Counts above 1
            run in a child process; on a CPU-only machine JAX then exposes that many host devices. Other
            backends get a row saying they run on one device.
        in_process: measure every device count of the current backend in this process (the child's mode).
    """
    archs, encoders = list(archs), list(encoders)
    devices = [int(d) for d in (devices.split(",") if isinstance(devices, str) else devices)]
    current = keras.backend.backend()
    if backends is None:
        backends = [current]
    elif isinstance(backends, str):
        backends = [b.strip() for b in backends.split(",") if b.strip()]
    rows = []
    for backend in backends:
        status = None
        if backend not in BACKENDS:
            status = f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}"
        elif backend != current and importlib.util.find_spec(backend) is None:
            status = "not installed"
        for count in devices:
            why = status or (f"keras.distribution is JAX-only: {backend} runs on one device"
                             if count > 1 and backend != "jax" else None)
            if why:
                rows += [_row(backend, arch, encoder, image_size, batch_size, why, count)
                         for arch in archs for encoder in encoders]
            elif backend == current and (count == 1 or in_process):
                rows += _measure_here(backend, archs, encoders, image_size, batch_size, steps, count)
            else:
                rows += _measure_subprocess(backend, archs, encoders, image_size, batch_size, steps, count)
    if out is not None:
        write_results(rows, out)
    echo(markdown_table(rows))
    return rows


def main(argv=None):
    """Command line: `python -m skinkeras.bench [--json] ...`; --json prints the rows as one JSON line.

    Args:
        argv: arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(prog="python -m skinkeras.bench", description=main.__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["deep_unet"])
    parser.add_argument("--encoders", nargs="+", default=["efficientnetb3"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=None, help="default: the current KERAS_BACKEND")
    parser.add_argument("--out", default=None, help="folder for bench.csv and bench.md")
    parser.add_argument("--devices", default="1", help="comma-separated data-parallel device counts")
    parser.add_argument("--json", action="store_true", help="print rows as one JSON line (for the parent process)")
    args = parser.parse_args(argv)
    kwargs = dict(archs=args.archs, encoders=args.encoders, image_size=args.image_size, batch_size=args.batch_size,
                  steps=args.steps, backends=args.backends, out=args.out)
    if not args.json:
        bench_segmentation(**kwargs, devices=args.devices)
        return
    # A child process: one device count, measured here. The parent parses stdout, so anything printed while
    # measuring (Python or native code) goes to stderr.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        rows = bench_segmentation(**kwargs, echo=lambda *a, **k: None, devices=[int(args.devices)], in_process=True)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    print(json.dumps(rows), flush=True)


if __name__ == "__main__":
    main()
