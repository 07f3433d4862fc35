"""Speed benchmark of every model: build, first step, steady images/s, FLOPs, memory, per backend and mode.

Models are the registry's (classifiers: the TDBN variants and the Table 2
baselines; segmentation: the Deep-UNet and its baselines), built with random
weights under a `--precision` dtype policy. Modes: `train` (the training
compile and `train_on_batch`), `infer` (the exported model's
`predict_on_batch`) and `input` (the training input pipeline on generated
data, no model). Each backend runs in its own child process, since Keras
fixes the backend per process; `torch-reference` runs the plain-PyTorch TDBN
of `experiments/bench/torch_reference.py` in a child that never imports
Keras.

Timing lives here, in a command that writes a table, and never in tests:
test machines are too noisy for timed assertions.
"""

import argparse
import csv
import gc
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from skinkeras import bench_backend

BACKENDS = ("jax", "tensorflow", "torch")
# Plain-PyTorch rows: backend name -> extra arguments of the reference script.
REFERENCE_BACKENDS = {"torch-reference": (), "torch-reference-channels_last": ("--channels-last",)}
# Keras-backend rows measured another way: name -> (KERAS_BACKEND, arguments of its child). torch-compile has
# the train and predict steps compiled (`jit_compile=True`); torch-channels_first runs the CNN encoders in
# torch's native NCHW layout (`skinkeras.models.layout`).
VARIANT_BACKENDS = {"torch-compile": ("torch", ("--jit-compile",)),
                    "torch-channels_first": ("torch", ("--data-format", "channels_first")),
                    "onnxruntime": ("tensorflow", ("--runtime", "onnx"))}
# Exported-runtime rows: name -> the `skinkeras.exporting` format their child exports to (under the backend
# above: TensorFlow, whose exporter carries every model here to ONNX) and runs by its own runtime.
RUNTIME_BACKENDS = {"onnxruntime": "onnx"}
ALL_BACKENDS = BACKENDS + tuple(VARIANT_BACKENDS) + tuple(REFERENCE_BACKENDS)
MODES = ("train", "infer", "input")
PRECISIONS = ("fp32", "bf16", "fp16")
FIELDS = ("backend", "devices", "model", "encoder", "mode", "precision", "image_size", "batch_size", "steps",
          "repeats", "build_s", "first_step_s", "step_s", "img_per_s", "img_per_s_min", "img_per_s_max",
          "flops_per_image", "flops_basis", "tflops_per_s", "host_mem_mb", "device_mem_mb", "params", "size_mb",
          "note", "status")
TIMING_FIELDS = ("build_s", "first_step_s", "step_s", "img_per_s", "img_per_s_min", "img_per_s_max",
                 "flops_per_image", "tflops_per_s", "host_mem_mb", "device_mem_mb", "params", "size_mb")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SCRIPT = PROJECT_ROOT / "experiments" / "bench" / "torch_reference.py"
# A train step costs about three forwards (forward, gradient of activations, gradient of weights).
TRAIN_FLOPS_FACTOR = 3
FOOTNOTES = (
    "img_per_s is the median over `repeats` timed runs of `steps` steps each (min and max beside it); the first "
    "step (compile + one step) is timed apart in first_step_s. The clock stops after the results reach the host "
    "(train_on_batch / predict_on_batch return numpy; torch.cuda.synchronize on CUDA).",
    "flops_per_image counts one forward pass, 2 per multiply-add of Conv / Dense / EinsumDense / attention "
    "(Keras: a counter over the layers' shapes; torch-reference: torch.utils.flop_counter.FlopCounterMode); "
    f"normalisation, activations and biases are not counted. tflops_per_s of train rows assumes a train step "
    f"= {TRAIN_FLOPS_FACTOR} x forward.",
    "host_mem_mb is the measuring process's peak resident memory so far (Linux VmHWM, else ru_maxrss), so later "
    "rows of one process include earlier ones, and rows of the current backend are measured in the parent; "
    "device_mem_mb is the accelerator's peak (None on a CPU; on JAX the peak of the whole child).",
    "params: Keras count_params (BatchNormalization's moving mean / variance included). torch-reference rows "
    "count torch parameters plus the BatchNorm running mean / variance buffers the same way "
    "(num_batches_tracked left out); nn.MultiheadAttention and Keras' MultiHeadAttention with key_dim = D / heads "
    "hold the same weights, so the counts agree exactly (tests/test_bench.py). What remains different is not a "
    "weight: torch's num_batches_tracked counters and the reference's ImageNet mean / std constants (buffers); "
    "the reference returns logits (its loss takes the softmax), ours a float32 softmax.",
)


def _row(backend, model, encoder, image_size, batch_size, status, devices=1, **values):
    """One result row with every field present (missing measurements are None).

    Args:
        backend: Keras backend name, or a torch-reference name.
        model: registry model name.
        encoder: encoder name (None where the model name fixes it).
        image_size: square input size.
        batch_size: images per step.
        status: "ok" or why the row has no measurements.
        devices: data-parallel devices the global batch is split over.
        **values: mode, precision, steps, repeats and measured fields.
    """
    row = {name: None for name in FIELDS}
    row.update(mode="train", precision="fp32")
    row.update(backend=backend, devices=devices, model=model, encoder=encoder, image_size=image_size,
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


def _plan(models, encoders):
    """(model, encoder, error) per row to measure: the registry checks names, None encoders take the default.

    A baseline classifier's name fixes its encoder (encoder None); the TDBN
    variants and the segmentation models take each of `encoders`, or their
    config's default encoder when none is given.

    Args:
        models: registry names.
        encoders: encoder names, or empty for each model's default.
    """
    from skinkeras.config import ClsTrainConfig, SegTrainConfig
    from skinkeras.models.contract import SEGMENTATION
    from skinkeras.models.registry import get_architecture

    plan = []
    for name in models:
        try:
            arch = get_architecture(name)
        except ValueError as e:
            plan.append((name, None, str(e)))
            continue
        if "arch" in arch.fixed:
            plan.append((arch.name, None, None))
            continue
        config = SegTrainConfig if arch.task == SEGMENTATION else ClsTrainConfig
        for encoder in encoders or [config.__dataclass_fields__["encoder"].default]:
            plan.append((arch.name, encoder, None))
    return plan


# --- FLOPs ---------------------------------------------------------------------------------------------------


def _size(shape):
    """Elements per sample of a (batch, ...) shape.

    Args:
        shape: tensor shape, batch first.
    """
    return math.prod(int(d) for d in shape[1:])


def layer_flops(layer, input_shapes, output_shape):
    """Forward FLOPs per sample of one compute layer (2 per multiply-add), or None for a layer not counted.

    Args:
        layer: a Keras layer (Dense, EinsumDense, Conv1D/2D/3D, DepthwiseConv2D, SeparableConv2D,
            Conv2DTranspose, MultiHeadAttention).
        input_shapes: shapes of its tensor inputs, batch first (MultiHeadAttention: query, value, key).
        output_shape: its output shape, batch first.
    """
    from keras import layers

    out = _size(output_shape)
    if isinstance(layer, layers.MultiHeadAttention):
        query, value, key = input_shapes
        nq, nk, nv = (_size(s) // int(s[-1]) for s in (query, key, value))
        heads, dk = layer.num_heads, layer.key_dim
        dv = layer.value_dim or dk
        projections = nq * int(query[-1]) * heads * dk + nk * int(key[-1]) * heads * dk \
            + nv * int(value[-1]) * heads * dv + nq * heads * dv * int(output_shape[-1])
        return 2 * (projections + nq * nk * heads * (dk + dv))
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw, cin, multiplier = layer.depthwise_kernel.shape
        spatial = out // int(output_shape[-1])
        return 2 * (spatial * cin * multiplier * kh * kw + out * cin * multiplier)
    if isinstance(layer, layers.DepthwiseConv2D):
        return 2 * out * math.prod(layer.kernel.shape[:-2])
    if isinstance(layer, layers.Conv2DTranspose):
        return 2 * _size(input_shapes[0]) * math.prod(layer.kernel.shape[:-1])
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        return 2 * out * math.prod(layer.kernel.shape[:-1])
    if isinstance(layer, layers.EinsumDense):
        inputs, result = layer.equation.split("->")
        kernel_axes = inputs.split(",")[1]
        contracted = math.prod(int(d) for axis, d in zip(kernel_axes, layer.kernel.shape) if axis not in result)
        return 2 * out * contracted
    if isinstance(layer, layers.Dense):
        return 2 * out * int(layer.kernel.shape[0])
    return None


def _counted_types():
    """The layer classes `layer_flops` counts, the composite MultiHeadAttention first (its projections are inside)."""
    from keras import layers

    return (layers.MultiHeadAttention, layers.SeparableConv2D, layers.DepthwiseConv2D, layers.Conv2DTranspose,
            layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.EinsumDense, layers.Dense)


def forward_flops(model):
    """Forward FLOPs per sample of a Keras model, summed over its compute layers' shapes (`layer_flops`).

    Every layer call of one batch-1 forward is seen, the sublayers of custom
    layers (cross-attention, ASPP, metadata encoders) and nested encoders
    included: `Layer.__call__` is wrapped for the duration. The forward is
    traced symbolically where the backend can (no arithmetic), else run on
    zeros. A counted layer's own sublayers (MultiHeadAttention's projections)
    are not counted twice.

    Args:
        model: a built Keras model whose inputs have static non-batch shapes.
    """
    import keras

    counted, calls, inside = _counted_types(), [], []
    original_call = keras.layers.Layer.__call__

    def shape_of(value):
        return tuple(value.shape) if hasattr(value, "shape") else None

    def recording_call(layer, *args, **kwargs):
        if inside or not isinstance(layer, counted):
            return original_call(layer, *args, **kwargs)
        inside.append(layer)
        try:
            output = original_call(layer, *args, **kwargs)
        finally:
            inside.pop()
        if isinstance(layer, keras.layers.MultiHeadAttention):
            query = kwargs.get("query", args[0] if args else None)
            value = kwargs.get("value", args[1] if len(args) > 1 else None)
            key = kwargs.get("key", args[2] if len(args) > 2 else None)
            shapes = [shape_of(query), shape_of(value), shape_of(key if key is not None else value)]
            result = output[0] if isinstance(output, tuple) else output
        else:
            shapes, result = [shape_of(args[0] if args else next(iter(kwargs.values())))], output
        calls.append((layer, shapes, shape_of(result)))
        return output

    shapes = [(1, *t.shape[1:]) for t in model.inputs]
    names = [t.name for t in model.inputs]
    is_dict = isinstance(model.input, dict)

    def forward(*tensors):
        inputs = dict(zip(names, tensors)) if is_dict else list(tensors)
        return model(inputs if len(tensors) > 1 or is_dict else tensors[0], training=False)

    keras.layers.Layer.__call__ = recording_call
    try:
        bench_backend.trace(forward, shapes)
    finally:
        keras.layers.Layer.__call__ = original_call
    return int(sum(layer_flops(layer, shapes, out) or 0 for layer, shapes, out in calls))


def _host_memory_mb():
    """Peak resident memory of this process so far, in MB.

    Linux's VmHWM where there is one: a child's ru_maxrss keeps its parent's peak across fork and exec,
    so it would report the parent's peak when that is larger; ru_maxrss (KB on Linux) elsewhere.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- measuring in this process --------------------------------------------------------------------------------


def _steady(step, batch_size, steps, repeats):
    """Times `repeats` runs of `steps` calls of `step`; returns the rate and step-time fields.

    Args:
        step: zero-argument callable doing one step (its results on the host when it returns).
        batch_size: images per step.
        steps: steps per timed run.
        repeats: timed runs.
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        bench_backend.sync()
        times.append(time.perf_counter() - start)
    rates = [batch_size * steps / t for t in times]
    return {"step_s": round(statistics.median(times) / steps, 4), "img_per_s": round(statistics.median(rates), 2),
            "img_per_s_min": round(min(rates), 2), "img_per_s_max": round(max(rates), 2)}


def _config(model_name, encoder, image_size, batch_size, jit_compile=None):
    """The training config a registry model is built from (random weights).

    Args:
        model_name: registry name.
        encoder: encoder name, or None for the config's default.
        image_size: square input size.
        batch_size: images per step.
        jit_compile: the config's `jit_compile` (None: Keras' auto).
    """
    from skinkeras.config import ClsTrainConfig, SegTrainConfig
    from skinkeras.models.contract import SEGMENTATION
    from skinkeras.models.registry import get_architecture

    arch = get_architecture(model_name)
    config = SegTrainConfig if arch.task == SEGMENTATION else ClsTrainConfig
    values = dict(arch=arch.name, weights="none", image_size=image_size, batch_size=batch_size,
                  jit_compile=jit_compile)
    if encoder:
        values["encoder"] = encoder
    return arch, config(**values)


def _random_batch(model, arch, cfg, batch_size, rng):
    """Random inputs named by the model's contract and targets for its training loss.

    Args:
        model: the built model.
        arch: its registry row.
        cfg: its config.
        batch_size: samples.
        rng: numpy Generator.
    """
    from skinkeras.models.contract import METADATA_MASK, SEGMENTATION, contract_of

    contract = contract_of(model)
    tensors = dict(zip([t.name for t in model.inputs], model.inputs))
    x = {}
    for name in contract.inputs:
        shape = (batch_size, *tensors[name].shape[1:])
        if name in contract.image_inputs:
            x[name] = rng.integers(0, 256, shape).astype("float32")
        elif name == METADATA_MASK:
            x[name] = np.ones(shape, "float32")
        else:
            x[name] = rng.random(shape).astype("float32")
    if arch.task == SEGMENTATION:
        # Deep-supervision heads may have their own shapes, so each target follows its output.
        y = {name: rng.integers(0, 2, (batch_size, *tensor.shape[1:])).astype("float32")
             for name, tensor in model.output.items()}
        return x[contract.inputs[0]], y
    return x, rng.integers(0, int(model.output.shape[-1]), batch_size)


def _build(arch, cfg, precision):
    """Builds (and times) the registry model under the precision's dtype policy.

    Args:
        arch: registry row.
        cfg: its config.
        precision: fp32 | bf16 | fp16.
    """
    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.data.sets import dataset_classes
    from skinkeras.models.contract import CLASSIFICATION
    from skinkeras.precision import precision_scope

    runtime = {}
    if arch.task == CLASSIFICATION:
        runtime["num_classes"] = len(dataset_classes(cfg.dataset))
        if arch.needs_metadata:
            # What cls-train passes: the width of the MetadataEncoder's vector (fixed by its vocabulary).
            runtime["num_features"] = MetadataEncoder().n_features
    with precision_scope(precision):
        return _timed(lambda: arch.build(cfg, **runtime))


def _compile(model, arch, cfg):
    """Compiles like training does (`compile_classifier` / `compile_segmentation`).

    Args:
        model: the built model.
        arch: its registry row.
        cfg: its config.
    """
    from skinkeras.models.contract import SEGMENTATION

    if arch.task == SEGMENTATION:
        from skinkeras.segmentation.train import compile_segmentation

        return compile_segmentation(model, cfg)
    from skinkeras.classification.train import compile_classifier

    return compile_classifier(model, cfg, int(model.output.shape[-1]))


def _measure_input(arch, cfg, batch_size, steps, repeats):
    """Images/s of the training input pipeline (augmented `ClassificationDataset` / `SegmentationDataset`).

    Generated uint8 data in memory, one epoch of `steps` batches per repeat; no model is built.

    Args:
        arch: registry row (its inputs name the arrays).
        cfg: its config.
        batch_size: images per batch.
        steps: batches per timed run.
        repeats: timed runs.
    """
    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.data.pipeline import ClassificationDataset, SegmentationDataset
    from skinkeras.models.contract import IMAGE_INPUTS, MASK, METADATA, METADATA_MASK, SEGMENTATION

    rng = np.random.default_rng(0)
    n, size = batch_size * steps, (cfg.image_size, cfg.image_size)
    if arch.task == SEGMENTATION:
        dataset = SegmentationDataset(rng.integers(0, 256, (n, *size, 3), dtype=np.uint8),
                                      rng.integers(0, 2, (n, *size, 1), dtype=np.uint8), batch_size, (MASK,),
                                      augment=True, shuffle=True, flip_prob=cfg.flip_prob,
                                      max_rotation=cfg.max_rotation)
    else:
        arrays = {name: rng.integers(0, 256, (n, *size, 3), dtype=np.uint8) for name in IMAGE_INPUTS}
        arrays[METADATA] = rng.random((n, MetadataEncoder().n_features)).astype("float32")
        arrays[METADATA_MASK] = np.ones((n, 1), "float32")
        dataset = ClassificationDataset(arrays, rng.integers(0, 7, n), arch.inputs, batch_size, augment=True,
                                        shuffle=True, image_inputs=IMAGE_INPUTS, flip_prob=cfg.flip_prob,
                                        max_rotation=cfg.max_rotation)
    _, first_s = _timed(lambda: dataset[0])
    batches = iter(range(10**9))
    values = _steady(lambda: dataset[next(batches) % len(dataset)], batch_size, steps, repeats)
    return {"first_step_s": round(first_s, 4), **values, "host_mem_mb": _host_memory_mb(),
            "note": f"{type(dataset).__name__}, augment=True, in-memory uint8"}


def _measure_exported(model, x, fmt, batch_size, steps, repeats):
    """(first_step_s, steady values, note) of the model exported to `fmt` and run by that format's runtime.

    The first step includes the export, the runtime's session and its first call; steady steps call the
    runtime alone on the same batch.
    """
    import tempfile

    from skinkeras.exporting.artifacts import FORMATS
    from skinkeras.exporting.runtimes import export_options, open_artifact
    from skinkeras.models.contract import contract_of, export_model

    infer = export_model(model)
    contract = contract_of(infer)
    feed = x if isinstance(x, dict) else {contract.inputs[0]: x}
    dict_inputs = isinstance(infer.input, dict)
    infer(x, training=False)  # Keras exports only a model that was called
    with tempfile.TemporaryDirectory(prefix="skinkeras-bench-") as folder:
        path = os.path.join(folder, FORMATS[fmt].filename)

        def first():
            infer.export(path, format=fmt, verbose=False, **export_options(fmt, infer))
            runner = open_artifact(path, fmt, contract.inputs, dict_inputs=dict_inputs)
            runner(feed)
            return runner

        runner, first_step_s = _timed(first)
        values = _steady(lambda: runner(feed), batch_size, steps, repeats)
    return first_step_s, values, f"{FORMATS[fmt].runtime}, exported by Keras' {fmt} exporter (first step: export)"


def _measure(model_name, encoder, mode, image_size, batch_size, steps, repeats=3, precision="fp32", jit_compile=None,
             runtime=None):
    """Measures one model in one mode in this process's backend; returns the row's measured fields.

    Args:
        model_name: registry name.
        encoder: encoder name (None: the config's default, or fixed by the name).
        mode: train | infer | input.
        image_size: square input size.
        batch_size: images per step.
        steps: timed steps per repeat, after the first (compiling) one.
        repeats: timed repeats.
        precision: fp32 | bf16 | fp16 (the dtype policy the model is built under).
        jit_compile: compile the train and predict steps (torch: `torch.compile`); None: Keras' auto.
        runtime: an export format (onnx): infer rows run the exported model in that format's runtime.
    """
    import keras

    from skinkeras.models.common import model_size
    from skinkeras.models.contract import export_model

    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; valid: {', '.join(MODES)}")
    arch, cfg = _config(model_name, encoder, image_size, batch_size, jit_compile)
    if mode == "input":
        return _measure_input(arch, cfg, batch_size, steps, repeats)
    if runtime and mode != "infer":
        raise ValueError(f"an exported {runtime} model runs inference only: see the Keras backends' {mode} rows")

    keras.utils.set_random_seed(0)
    model, build_s = _build(arch, cfg, precision)
    flops = forward_flops(model)
    x, y = _random_batch(model, arch, cfg, batch_size, np.random.default_rng(0))
    bench_backend.device_memory_mb(reset=True)
    if mode == "train":
        # train_on_batch only: on JAX, mixing it with fit would compile the train step twice.
        _, first_step_s = _timed(lambda: (_compile(model, arch, cfg), model.train_on_batch(x, y), bench_backend.sync()))
        values = _steady(lambda: model.train_on_batch(x, y), batch_size, steps, repeats)
        factor = TRAIN_FLOPS_FACTOR
    elif runtime:
        first_step_s, values, note = _measure_exported(model, x, runtime, batch_size, steps, repeats)
        factor = 1
    else:
        infer = export_model(model)
        if jit_compile is not None:
            infer.compile(jit_compile=jit_compile)
        _, first_step_s = _timed(lambda: (infer.predict_on_batch(x), bench_backend.sync()))
        values = _steady(lambda: infer.predict_on_batch(x), batch_size, steps, repeats)
        factor = 1
    return {
        "build_s": round(build_s, 3),
        "first_step_s": round(first_step_s, 3),
        **values,
        "flops_per_image": flops,
        "flops_basis": f"forward x{factor} (train)" if mode == "train" else "forward",
        # Four significant digits, not four decimals: a tiny model on a busy CPU runs at 1e-5 TFLOP/s, not 0.
        "tflops_per_s": float(f"{flops * factor * values['img_per_s'] / 1e12:.4g}"),
        "host_mem_mb": _host_memory_mb(),
        "device_mem_mb": bench_backend.device_memory_mb(),
        **model_size(model),
        **({"note": note} if runtime else {}),
    }


def _measure_here(backend, plan, modes, image_size, batch_size, steps, devices=1, repeats=3, precision="fp32",
                  jit_compile=None, runtime=None):
    """Rows for every planned model x mode in this process (a failing model becomes an error row).

    Args:
        backend: this process's Keras backend.
        plan: (model, encoder, error) from `_plan`.
        modes: modes to measure.
        image_size: square input size.
        batch_size: images per step (the global batch, split over `devices`).
        steps: timed steps per repeat.
        devices: data-parallel devices (`skinkeras.distribute`).
        repeats: timed repeats.
        precision: fp32 | bf16 | fp16.
        jit_compile: see `_measure`.
        runtime: see `_measure`.
    """
    import keras

    from skinkeras import distribute

    common = dict(steps=steps, repeats=repeats, precision=precision)
    try:
        distribute.configure(devices).check_batch(batch_size)
    except ValueError as e:
        return [_row(backend, model, encoder, image_size, batch_size, f"error: {e}", devices, mode=mode, **common)
                for model, encoder, _ in plan for mode in modes]
    rows = []
    for model, encoder, error in plan:
        for mode in modes:
            if error:
                rows.append(_row(backend, model, encoder, image_size, batch_size, error, devices, mode=mode, **common))
                continue
            try:
                values = _measure(model, encoder, mode, image_size, batch_size, steps, repeats, precision, jit_compile,
                                  runtime)
                rows.append(_row(backend, model, encoder, image_size, batch_size, "ok", devices, mode=mode, **common,
                                 **values))
            except Exception as e:  # one broken model should not lose the others' measurements
                rows.append(_row(backend, model, encoder, image_size, batch_size, f"error: {type(e).__name__}: {e}",
                                 devices, mode=mode, **common))
            # Frees the model's graph and memory before the next one is built.
            keras.backend.clear_session()
            gc.collect()
    return rows


# --- child processes ------------------------------------------------------------------------------------------


def _child_env(backend, devices=1):
    """Environment of a child process: the backend, quiet TensorFlow, the project importable.

    Args:
        backend: KERAS_BACKEND of the child.
        devices: data-parallel devices (JAX on a CPU exposes that many host devices).
    """
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=pythonpath)
    if backend == "jax" and devices > 1:
        env.setdefault("JAX_NUM_CPU_DEVICES", str(devices))  # on a CPU-only machine: N host devices
    return env


def _run_child(cmd, env):
    """Runs a child that prints one JSON list as its last stdout line; returns (list, None) or (None, reason).

    Args:
        cmd: argv.
        env: environment.
    """
    proc = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1]), None
        except json.JSONDecodeError:
            return None, f"unreadable child output: {lines[-1][:200]}"
    tail = [line for line in proc.stderr.splitlines() if line.strip()]
    return None, f"exit {proc.returncode}: {tail[-1][:200] if tail else 'no output'}"


def _measure_subprocess(backend, models, encoders, modes, image_size, batch_size, steps, devices=1, repeats=3,
                        precision="fp32", label=None):
    """Rows measured by `python -m skinkeras.bench --json` under KERAS_BACKEND=`backend`.

    Args:
        backend: Keras backend for the child process.
        models: registry names.
        encoders: encoder names (empty: each model's default).
        modes: modes.
        image_size: square input size.
        batch_size: images per step.
        steps: timed steps per repeat.
        devices: data-parallel devices in the child.
        repeats: timed repeats.
        precision: fp32 | bf16 | fp16.
        label: the rows' backend name when it is not `backend` (a `VARIANT_BACKENDS` row).
    """
    label = label or backend
    module, extra = VARIANT_BACKENDS.get(label, (backend, ()))
    cmd = [sys.executable, "-m", "skinkeras.bench", "--json", "--models", *models,
           *(["--encoders", *encoders] if encoders else []), "--modes", *modes,
           "--image-size", str(image_size), "--batch-size", str(batch_size), "--steps", str(steps),
           "--repeats", str(repeats), "--precision", precision, "--devices", str(devices),
           *extra]
    rows, reason = _run_child(cmd, _child_env(module, devices))
    if rows is not None:
        return [{**row, "backend": label} for row in rows]
    return [_row(label, model, encoder, image_size, batch_size, f"error: subprocess {reason}", devices, mode=mode,
                 steps=steps, repeats=repeats, precision=precision)
            for model, encoder, _ in _plan(models, encoders) for mode in modes]


def load_torch_reference():
    """The `experiments/bench/torch_reference.py` module (not a package: loaded from its path)."""
    spec = importlib.util.spec_from_file_location("skinkeras_torch_reference", REFERENCE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_support(model, encoder, mode):
    """Why the plain-PyTorch reference has no row for this model / encoder / mode (None: it has).

    Kept in step with `MODELS` and `DENSENETS` of the reference script, which the parent does not import
    (it would import torch).
    """
    if model not in ("tdbn", "tdbn_no_meta"):
        return f"no torch reference for {model} (tdbn, tdbn_no_meta)"
    if encoder not in ("densenet121", "densenet169", "densenet201"):
        return f"no torch reference encoder {encoder} (densenet121, densenet169, densenet201)"
    if mode == "input":
        return "input pipeline is the project's (numpy) one: see the Keras backends' input rows"
    return None


def _measure_reference(backend, plan, modes, image_size, batch_size, steps, repeats, precision):
    """Rows of the plain-PyTorch reference, measured in one child process that does not import Keras.

    Args:
        backend: a REFERENCE_BACKENDS name.
        plan: (model, encoder, error) from `_plan`.
        modes: modes.
        image_size: square input size.
        batch_size: images per step.
        steps: timed steps per repeat.
        repeats: timed repeats.
        precision: fp32 | bf16 | fp16 (torch.autocast).
    """
    common = dict(steps=steps, repeats=repeats, precision=precision)
    rows, todo = [], []
    for model, encoder, error in plan:
        for mode in modes:
            status = error or _reference_support(model, encoder, mode)
            rows.append(_row(backend, model, encoder, image_size, batch_size, status or "pending", mode=mode, **common))
            if status is None:
                todo.append(len(rows) - 1)
    if not todo:
        return rows
    from skinkeras.config import ClsTrainConfig
    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.data.sets import dataset_classes

    # The widths the Keras TDBN of the same row is built with (`_build`).
    classes = len(dataset_classes(ClsTrainConfig.__dataclass_fields__["dataset"].default))
    cmd = [sys.executable, str(REFERENCE_SCRIPT), "--json", "--num-classes", str(classes),
           "--num-features", str(MetadataEncoder().n_features), "--rows",
           *(",".join((rows[i]["model"], rows[i]["encoder"], rows[i]["mode"])) for i in todo),
           "--image-size", str(image_size), "--batch-size", str(batch_size), "--steps", str(steps),
           "--repeats", str(repeats), "--precision", precision, *REFERENCE_BACKENDS[backend]]
    results, reason = _run_child(cmd, _child_env("torch"))
    if results is None or len(results) != len(todo):
        reason = reason or f"{len(results)} results for {len(todo)} rows"
        results = [{"status": f"error: subprocess {reason}"}] * len(todo)
    for index, values in zip(todo, results):
        rows[index].update(values)
    return rows


# --- output ---------------------------------------------------------------------------------------------------


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


def plot_throughput(rows, path):
    """Bar chart of steady images/s (median, min-max whiskers) per row, coloured by backend; None if no row is ok.

    Args:
        rows: result dicts.
        path: PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get("img_per_s")]
    if not ok:
        return None
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    colours = {b: plt.cm.tab10(i % 10) for i, b in enumerate(backends)}
    # The backend is the bar's colour (legend), so the tick labels stay short.
    labels = [f"{r['model']}{'/' + r['encoder'] if r.get('encoder') else ''}\n{r['mode']} {r['precision']}"
              for r in ok]
    heights = [float(r["img_per_s"]) for r in ok]
    low = [h - float(r.get("img_per_s_min") or h) for h, r in zip(heights, ok)]
    high = [float(r.get("img_per_s_max") or h) - h for h, r in zip(heights, ok)]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ok) + 2), 4.5))
    ax.bar(range(len(ok)), heights, yerr=[low, high], capsize=3, color=[colours[r["backend"]] for r in ok])
    ax.set_xticks(range(len(ok)), labels, fontsize=7)
    ax.set_ylabel("images / s (median of repeats)")
    size = ok[0]["image_size"]
    ax.set_title(f"Steady throughput per backend ({size} px, batch {ok[0]['batch_size']})")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[b]) for b in backends]
    ax.legend(handles, backends, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(rows, out):
    """Writes `out`/bench.csv, bench.md (table and footnotes) and bench.png; returns their paths.

    Args:
        rows: result dicts.
        out: output folder (created if missing).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out / "bench.csv", out / "bench.md", out / "bench.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    notes = "\n".join(f"{i}. {note}" for i, note in enumerate(FOOTNOTES, 1))
    md_path.write_text(markdown_table(rows) + "\n\n" + notes + "\n")
    png = plot_throughput(rows, png_path)
    return csv_path, md_path, png


def _as_list(values, default):
    """A list from a comma-separated string, an iterable or None (`default`).

    Args:
        values: the option's value.
        default: the list when `values` is None.
    """
    if values is None:
        return list(default)
    if isinstance(values, str):
        values = values.split(",")
    return [str(v).strip() for v in values if str(v).strip()]


def run_bench(models=("deep_unet",), encoders=(), modes=("train",), image_size=224, batch_size=8, steps=3,
              repeats=3, precision="fp32", backends=None, out=None, echo=print, devices=(1,), in_process=False,
              jit_compile=None, isolate=False, runtime=None):
    """Measures every model x encoder x mode on every backend; returns the rows (see `FIELDS`).

    Models are built with random weights (weights none) under the precision's
    dtype policy, compiled like training and fed random 0-255 images (plus
    metadata and integer labels for classifiers, binary masks for
    segmentation).

    Args:
        models: registry names (classifiers and segmentation models); an unknown one gives a status row.
        encoders: encoder names for the models that take one (TDBN variants, segmentation); empty = each
            model's default (densenet201 / efficientnetb3). Baseline classifiers' names fix their encoder.
        modes: train | infer | input.
        image_size: square input size (multiple of 32 for segmentation).
        batch_size: images per step.
        steps: timed steps per repeat, after the first (compiling) one.
        repeats: timed repeats; img/s is their median, with min and max.
        precision: fp32 | bf16 | fp16.
        backends: names or a comma-separated string (jax, tensorflow, torch, torch-compile = torch with
            jit_compile=True, torch-channels_first = torch with the encoders in NCHW, torch-reference,
            torch-reference-channels_last); None = the current backend only.
            Other backends run in a child process; an unknown or uninstalled one gives a row with that status.
        out: folder for bench.csv, bench.md and bench.png (nothing written when None).
        echo: called with the markdown table.
        devices: data-parallel device counts, one row each (the batch is the global batch). Counts above 1
            run in a child process; on a CPU-only machine JAX then exposes that many host devices. Other
            backends get a row saying they run on one device.
        in_process: measure every device count of the current backend in this process (the child's mode).
        jit_compile: the `jit_compile` of the current backend's rows (a torch-compile child's mode).
        isolate: measure the current backend in a child process too (the CLI's choice): this process then
            builds no model, so its memory does not add to the next child's and each row's peak host memory
            is that backend's alone.
        runtime: the current backend's rows run the exported model in this format's runtime (an onnxruntime
            child's mode).
    """
    import keras

    models, encoders, modes = _as_list(models, ()), _as_list(encoders, ()), _as_list(modes, ("train",))
    devices = [int(d) for d in _as_list(devices, (1,))]
    current = keras.backend.backend()
    backends = _as_list(backends, (current,))
    common = dict(steps=steps, repeats=repeats, precision=precision)
    plan = _plan(models, encoders)
    bad_mode = next((m for m in modes if m not in MODES), None)
    bad_precision = (None if precision in PRECISIONS
                     else f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    rows = []
    for backend in backends:
        status = bad_precision or (f"unknown mode {bad_mode!r}; valid: {', '.join(MODES)}" if bad_mode else None)
        module = "torch" if backend in REFERENCE_BACKENDS else VARIANT_BACKENDS.get(backend, (backend,))[0]
        if backend not in ALL_BACKENDS:
            status = f"unknown backend {backend!r}; valid: {', '.join(ALL_BACKENDS)}"
        elif module != current and importlib.util.find_spec(module) is None:
            status = "not installed"
        elif backend in RUNTIME_BACKENDS and importlib.util.find_spec(backend) is None:
            status = 'not installed: pip install "skinkeras[export]"'
        measured_modes = modes
        if backend in RUNTIME_BACKENDS and not status:
            # an exported model only predicts: its other modes are a status row each, never measured
            rows += [_row(backend, model, encoder, image_size, batch_size,
                          f"inference only: an exported {RUNTIME_BACKENDS[backend]} model is not trained", mode=mode,
                          **common) for model, encoder, _ in plan for mode in modes if mode != "infer"]
            measured_modes = [m for m in modes if m == "infer"]
            if not measured_modes:
                continue
        for count in devices:
            why = status or (f"{'keras.distribution is JAX-only' if module == backend else 'the reference'}: "
                             f"{backend} runs on one device" if count > 1 and backend != "jax" else None)
            if why:
                rows += [_row(backend, model, encoder, image_size, batch_size, why, count, mode=mode, **common)
                         for model, encoder, _ in plan for mode in modes]
            elif backend in VARIANT_BACKENDS:
                rows += _measure_subprocess(backend, models, encoders, measured_modes, image_size, batch_size, steps,
                                            count, repeats, precision)
            elif backend in REFERENCE_BACKENDS:
                rows += _measure_reference(backend, plan, modes, image_size, batch_size, steps, repeats, precision)
            elif backend == current and not isolate and (count == 1 or in_process):
                rows += _measure_here(backend, plan, modes, image_size, batch_size, steps, count, repeats, precision,
                                      jit_compile, runtime)
            else:
                rows += _measure_subprocess(backend, models, encoders, modes, image_size, batch_size, steps, count,
                                            repeats, precision)
    if out is not None:
        write_results(rows, out)
    echo(markdown_table(rows))
    return rows


def bench_segmentation(archs=("deep_unet",), encoders=("efficientnetb3",), image_size=224, batch_size=8, steps=3,
                       backends=None, out=None, echo=print, devices=(1,), in_process=False, modes=("train",),
                       repeats=3, precision="fp32"):
    """`run_bench` under its earlier name and argument names (`archs` = models), kept for callers of that API.

    Args:
        archs: registry names.
        encoders: encoder names.
        image_size: square input size.
        batch_size: images per step.
        steps: timed steps per repeat.
        backends: see `run_bench`.
        out: output folder or None.
        echo: called with the markdown table.
        devices: data-parallel device counts.
        in_process: see `run_bench`.
        modes: train | infer | input.
        repeats: timed repeats.
        precision: fp32 | bf16 | fp16.
    """
    return run_bench(archs, encoders, modes, image_size, batch_size, steps, repeats, precision, backends, out, echo,
                     devices, in_process)


def main(argv=None):
    """Command line: `python -m skinkeras.bench [--json] ...`; --json prints the rows as one JSON line.

    Args:
        argv: arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(prog="python -m skinkeras.bench", description=main.__doc__.splitlines()[0])
    parser.add_argument("--models", "--archs", dest="models", nargs="+", default=["deep_unet"])
    parser.add_argument("--encoders", nargs="+", default=[])
    parser.add_argument("--modes", nargs="+", default=["train"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backends", nargs="+", default=None, help="default: the current KERAS_BACKEND")
    parser.add_argument("--out", default=None, help="folder for bench.csv, bench.md and bench.png")
    parser.add_argument("--devices", default="1", help="comma-separated data-parallel device counts")
    parser.add_argument("--json", action="store_true", help="print rows as one JSON line (for the parent process)")
    parser.add_argument("--jit-compile", action="store_true", help="compile the steps (a torch-compile child)")
    parser.add_argument("--data-format", default=None, help="Keras image data format of the models built here")
    parser.add_argument("--runtime", default=None, help="export format whose runtime runs the infer rows (onnx)")
    args = parser.parse_args(argv)
    if args.data_format:
        import keras

        keras.config.set_image_data_format(args.data_format)  # this process only: what the builders read
    kwargs = dict(models=args.models, encoders=args.encoders, modes=args.modes, image_size=args.image_size,
                  batch_size=args.batch_size, steps=args.steps, repeats=args.repeats, precision=args.precision,
                  backends=args.backends, out=args.out)
    if not args.json:
        run_bench(**kwargs, devices=args.devices)
        return
    # A child process: one device count, measured here. The parent parses stdout, so anything printed while
    # measuring (Python or native code) goes to stderr.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        rows = run_bench(**kwargs, echo=lambda *a, **k: None, devices=[int(args.devices)], in_process=True,
                         jit_compile=True if args.jit_compile else None, runtime=args.runtime)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    print(json.dumps(rows), flush=True)


if __name__ == "__main__":
    main()
