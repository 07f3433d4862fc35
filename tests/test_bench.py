"""Speed benchmark: rows, files and backend handling (no assertions on time values beyond > 0)."""

import csv
import importlib.util
import json
import subprocess

import keras
import numpy as np
import pytest

from skinkeras import bench


def quiet(*args, **kwargs):
    """Echo that prints nothing."""


def sane(row, measured_model=True):
    """Asserts the row has every field and plausible measurements."""
    assert set(row) == set(bench.FIELDS)
    assert row["status"] == "ok", row["status"]
    for name in ("first_step_s", "step_s", "img_per_s", "img_per_s_min", "img_per_s_max", "host_mem_mb"):
        assert row[name] > 0, name
    assert row["img_per_s_min"] <= row["img_per_s"] <= row["img_per_s_max"]
    assert row["device_mem_mb"] is None or row["device_mem_mb"] > 0
    if measured_model:
        for name in ("build_s", "flops_per_image", "tflops_per_s", "params", "size_mb"):
            assert row[name] > 0, name
        assert row["flops_basis"].startswith("forward")


def registry_params(name, encoder, image_size):
    """count_params of the registry model the bench builds (random weights)."""
    return bench._build(*bench._config(name, encoder, image_size, 2), "fp32")[0].count_params()


def test_bench_rows_and_files(tmp_path):
    rows = bench.bench_segmentation(archs=("unet", "deeplabv3plus"), encoders=("mobilenetv2",), image_size=64,
                                    batch_size=2, steps=1, repeats=1, out=tmp_path, echo=quiet)
    assert [row["model"] for row in rows] == ["unet", "deeplabv3plus"]
    for row in rows:
        sane(row)
        assert row["backend"] == keras.backend.backend()
        assert (row["encoder"], row["image_size"], row["batch_size"], row["mode"], row["precision"]) == \
            ("mobilenetv2", 64, 2, "train", "fp32")
        assert row["flops_basis"] == f"forward x{bench.TRAIN_FLOPS_FACTOR} (train)"
    assert rows[0]["params"] != rows[1]["params"]
    assert rows[0]["params"] == registry_params("unet", "mobilenetv2", 64)

    with open(tmp_path / "bench.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["unet", "deeplabv3plus"]
    assert list(table[0]) == list(bench.FIELDS)
    md = (tmp_path / "bench.md").read_text().strip().splitlines()
    assert md[0].startswith("| backend | devices | model | encoder | mode |") and "unet" in md[2]
    assert "deeplabv3plus" in md[3] and md[4] == "" and md[5].startswith("1. ")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classification_rows_in_every_mode():
    # The dual-encoder TDBN with metadata on torch; one encoder elsewhere, where compiling the TDBN's train and
    # predict steps takes minutes (158 s on TensorFlow).
    name = "tdbn" if keras.backend.backend() == "torch" else "original_only"
    rows = bench.run_bench(models=[name], encoders=["mobilenetv2"], modes=["train", "infer", "input"],
                           image_size=32, batch_size=2, steps=1, repeats=2, echo=quiet)
    assert [(r["model"], r["mode"]) for r in rows] == [(name, "train"), (name, "infer"), (name, "input")]
    train, infer, pipeline = rows
    sane(train)
    sane(infer)
    sane(pipeline, measured_model=False)
    assert train["params"] == infer["params"] == registry_params(name, "mobilenetv2", 32)
    assert train["flops_per_image"] == infer["flops_per_image"] and infer["flops_basis"] == "forward"
    assert pipeline["params"] is None and "ClassificationDataset" in pipeline["note"]


def test_flop_counter_against_hand_counts():
    from keras import layers

    image = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(image)  # 8*8 outputs x 4 filters, 3*3*3 multiply-adds each
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4 x 4 outputs, 3*3 each
    x = layers.Flatten()(x)
    logits = layers.Dense(5)(x)  # 64 inputs x 5
    assert bench.forward_flops(keras.Model(image, logits)) == 2 * (8 * 8 * 4 * 27 + 4 * 4 * 4 * 9 + 64 * 5)

    query, memory = keras.Input((6, 8)), keras.Input((3, 8))
    attended = layers.MultiHeadAttention(2, 4)(query=query, value=memory, key=memory)
    # q (6 tokens), k and v (3 tokens) and output projections of 8 -> 2 heads x 4 -> 8, plus the (6 x 3)
    # score and mixing products of each head
    hand = 2 * (6 * 8 * 8 + 3 * 8 * 8 + 3 * 8 * 8 + 6 * 8 * 8) + 2 * 6 * 3 * 2 * (4 + 4)
    assert bench.forward_flops(keras.Model([query, memory], attended)) == hand


def test_status_rows_for_unknown_backend_model_mode_and_missing_reference():
    rows = bench.run_bench(models=["no_such_model", "vit"], modes=["train"], image_size=32, batch_size=2, steps=1,
                           backends="no_such_backend,torch-reference", echo=quiet)
    assert [(r["backend"], r["model"]) for r in rows] == [("no_such_backend", "no_such_model"),
                                                          ("no_such_backend", "vit"),
                                                          ("torch-reference", "no_such_model"),
                                                          ("torch-reference", "vit")]
    assert all(set(r) == set(bench.FIELDS) and r["img_per_s"] is None for r in rows)
    assert "unknown backend" in rows[0]["status"] and "torch-reference" in rows[0]["status"]
    assert "Unknown model" in rows[2]["status"] and "tdbn" in rows[2]["status"]
    assert rows[3]["status"].startswith("no torch reference for vit")
    odd = bench.run_bench(models=["unet"], modes=["warp"], precision="fp8", echo=quiet)
    assert "unknown precision" in odd[0]["status"]
    odd = bench.run_bench(models=["unet"], modes=["warp"], echo=quiet)
    assert "unknown mode 'warp'" in odd[0]["status"]


def test_jit_compile_reaches_keras_compile_and_torch_compile_rows_ask_for_it(monkeypatch):
    """torch-compile rows come from a torch child started with --jit-compile (not run here: a compiled model's
    first step takes minutes on a CPU); the training configs hand jit_compile to Keras' compile."""
    from skinkeras.segmentation.train import compile_segmentation

    calls = []
    monkeypatch.setattr(bench, "_run_child", lambda cmd, env: (calls.append((cmd, env)), ([{"backend": "torch"}],
                                                                                          None))[1])
    rows = bench.run_bench(models=["unet"], modes=["train"], image_size=32, batch_size=2, backends="torch-compile",
                           echo=quiet)
    (cmd, env), = calls
    assert "--jit-compile" in cmd and env["KERAS_BACKEND"] == "torch" and rows == [{"backend": "torch-compile"}]
    arch, cfg = bench._config("unet", "mobilenetv2", 32, 2, jit_compile=True)
    assert cfg.jit_compile is True
    assert compile_segmentation(bench._build(arch, cfg, "fp32")[0], cfg).jit_compile is True
    _, auto = bench._config("unet", "mobilenetv2", 32, 2)
    assert compile_segmentation(bench._build(arch, auto, "fp32")[0], auto).jit_compile == (
        keras.backend.backend() != "torch")  # Keras' auto: XLA on JAX / TensorFlow, eager on torch


def test_torch_channels_first_rows_come_from_a_child_building_in_nchw(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "_run_child", lambda cmd, env: (calls.append((cmd, env)), ([{"backend": "torch"}],
                                                                                          None))[1])
    rows = bench.run_bench(models=["tdbn"], modes=["infer"], image_size=32, batch_size=2,
                           backends="torch-channels_first", echo=quiet)
    (cmd, env), = calls
    assert cmd[-2:] == ["--data-format", "channels_first"] and env["KERAS_BACKEND"] == "torch"
    assert rows == [{"backend": "torch-channels_first"}]


def test_isolate_measures_the_current_backend_in_a_child_too(monkeypatch):
    """The CLI's bench builds no model in its own process (isolate): one child per backend, this one's included."""
    calls = []
    monkeypatch.setattr(bench, "_run_child", lambda cmd, env: (calls.append(env["KERAS_BACKEND"]),
                                                               ([{"backend": env["KERAS_BACKEND"]}], None))[1])
    monkeypatch.setattr(bench, "_measure_here", lambda *a, **k: pytest.fail("measured in the parent"))
    current = keras.backend.backend()
    rows = bench.run_bench(models=["unet"], modes=["train"], image_size=32, batch_size=2, backends=current,
                           echo=quiet, isolate=True)
    assert calls == [current] and rows == [{"backend": current}]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the reference needs torch")
def test_torch_reference_row(tmp_path):
    rows = bench.run_bench(models=["tdbn"], encoders=["densenet121"], modes=["train", "input"], image_size=32,
                           batch_size=2, steps=1, repeats=1, backends="torch-reference", out=tmp_path, echo=quiet)
    train, pipeline = rows
    sane(train)
    assert (train["backend"], train["model"], train["encoder"]) == ("torch-reference", "tdbn", "densenet121")
    assert "DenseNet, NCHW" in train["note"]
    assert pipeline["status"].startswith("input pipeline is the project's")
    assert "torch-reference" in (tmp_path / "bench.md").read_text()


def reference_and_keras_tdbn(encoder, image_size):
    """(Keras TDBN of the registry, the plain-PyTorch reference) at the same widths, random weights."""
    from skinkeras.data.metadata import MetadataEncoder

    keras_model = bench._build(*bench._config("tdbn", encoder, image_size, 2), "fp32")[0]
    reference = bench.load_torch_reference().TDBN(7, encoder, "tdbn", MetadataEncoder().n_features)
    return keras_model, reference


def check_reference_matches(encoder, image_size):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    keras_model, reference = reference_and_keras_tdbn(encoder, image_size)
    module = bench.load_torch_reference()
    # Keras counts each BatchNormalization's moving mean / variance (non-trainable weights), torch keeps them as
    # buffers: keras_equivalent_params adds them. MultiHeadAttention with key_dim = D / heads holds the same
    # q / k / v / output kernels and biases as nn.MultiheadAttention, so nothing else remains to account for.
    bn_stats = sum(m.running_mean.numel() + m.running_var.numel() for m in reference.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    torch_params = sum(p.numel() for p in reference.parameters())
    assert module.keras_equivalent_params(reference) == torch_params + bn_stats
    assert keras_model.count_params() == torch_params + bn_stats
    non_trainable = sum(int(np.prod(w.shape)) for w in keras_model.non_trainable_weights)
    assert non_trainable == bn_stats

    reference.train()  # eval mode's fused attention path hides its products from FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        reference(*module.random_inputs("tdbn", 2, image_size, reference.tabular[0].in_features, "cpu"))
    assert bench.forward_flops(keras_model) == counter.get_total_flops() // 2


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="a dual DenseNet builds in seconds on torch only")
def test_reference_params_and_flops_match_keras_small_encoder():
    check_reference_matches("densenet121", 64)


@pytest.mark.slow
@pytest.mark.backend
def test_reference_params_and_flops_match_keras_at_paper_size():
    pytest.importorskip("torch")
    check_reference_matches("densenet201", 224)


def test_unknown_backend_is_a_row_not_an_error():
    echoed = []
    rows = bench.bench_segmentation(archs=("unet", "unetpp"), encoders=("mobilenetv2",), image_size=64,
                                    batch_size=2, steps=1, backends=["nonexistent_backend"], echo=echoed.append)
    assert [row["model"] for row in rows] == ["unet", "unetpp"]
    for row in rows:
        assert row["backend"] == "nonexistent_backend"
        assert "nonexistent_backend" in row["status"] and "valid" in row["status"]
        assert row["step_s"] is None and row["params"] is None
    assert "nonexistent_backend" in echoed[0]


def test_uninstalled_backend_is_reported(monkeypatch):
    other = next(b for b in bench.BACKENDS if b != keras.backend.backend())
    find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name, *a: None if name == other else find_spec(name, *a))
    rows = bench.bench_segmentation(archs=("unet",), encoders=("mobilenetv2",), backends=other, echo=quiet)
    assert [(row["backend"], row["status"]) for row in rows] == [(other, "not installed")]


def test_subprocess_rows_parsed_from_last_stdout_line(monkeypatch):
    other = next(b for b in bench.BACKENDS if b != keras.backend.backend())
    child_row = bench._row(other, "unet", "mobilenetv2", 64, 2, "ok", step_s=0.5, params=10)
    calls = []

    def fake_run(cmd, env, **kwargs):
        calls.append((cmd, env))
        return subprocess.CompletedProcess(cmd, 0, stdout="stray line\n" + json.dumps([child_row]) + "\n", stderr="")

    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    rows = bench.bench_segmentation(archs=("unet",), encoders=("mobilenetv2",), image_size=64, batch_size=2,
                                    steps=1, backends=[other], echo=quiet)
    assert rows == [child_row]
    cmd, env = calls[0]
    assert cmd[1:4] == ["-m", "skinkeras.bench", "--json"]
    assert env["KERAS_BACKEND"] == other and env["TF_CPP_MIN_LOG_LEVEL"] == "2"

    def failing_run(cmd, env, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Traceback\nImportError: boom\n")

    monkeypatch.setattr(bench.subprocess, "run", failing_run)
    rows = bench.bench_segmentation(archs=("unet",), encoders=("mobilenetv2",), backends=[other], echo=quiet)
    assert rows[0]["status"].startswith("error: subprocess exit 1") and "boom" in rows[0]["status"]


def test_json_mode_prints_one_json_line(capfd):
    bench.main(["--json", "--backends", "nonexistent_backend", "--archs", "unet", "--encoders", "mobilenetv2"])
    out = capfd.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])[0]["backend"] == "nonexistent_backend"


def test_bench_folder_in_the_report(tmp_path):
    from skinkeras.report.html import build_report, folder_kind

    rows = [bench._row("torch", "unet", "mobilenetv2", 64, 2, "ok", build_s=1.25, step_s=0.5),
            bench._row("jax", "unet", "mobilenetv2", 64, 2, "jax not installed")]
    bench.write_results(rows, tmp_path / "bench")
    assert folder_kind(tmp_path / "bench") == "bench"
    page = build_report([tmp_path / "bench"])
    section = page.split('<section id="bench">')[1].split("</section>")[0]
    assert section.count("<tr>") == 3 and "jax not installed" in section and "<td>1.25</td>" in section


def test_several_devices_on_a_backend_without_distribution_is_a_row_not_a_measurement():
    rows = bench.bench_segmentation(archs=["unet"], encoders=["mobilenetv2"], image_size=64, batch_size=2,
                                    backends="tensorflow,nonexistent_backend", devices="2", echo=lambda *a: None)
    assert [(r["backend"], r["devices"]) for r in rows] == [("tensorflow", 2), ("nonexistent_backend", 2)]
    assert "JAX-only" in rows[0]["status"] and rows[0]["step_s"] is None
    assert "unknown backend" in rows[1]["status"]


def test_onnxruntime_rows_run_the_exported_model(tmp_path):
    """onnxruntime rows: a TensorFlow child exports the model to ONNX and times onnxruntime on it (infer); the
    other modes get a status row and are never measured."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("tf2onnx") is None:
        pytest.skip('the export extra is not installed (pip install "skinkeras[export]")')
    rows = bench.run_bench(models=["unet"], encoders=["mobilenetv2"], modes=["infer", "train"], image_size=32,
                           batch_size=2, steps=1, repeats=1, backends="onnxruntime", echo=quiet)
    train = next(r for r in rows if r["mode"] == "train")
    infer = next(r for r in rows if r["mode"] == "infer")
    assert train["status"].startswith("inference only") and train["img_per_s"] is None
    assert infer["status"] == "ok", infer["status"]
    assert infer["backend"] == "onnxruntime" and infer["img_per_s"] > 0 and "onnxruntime" in infer["note"]
    # the same model as the Keras rows: the parameter count and FLOPs are the Keras model's
    assert infer["params"] > 0 and infer["flops_per_image"] > 0
