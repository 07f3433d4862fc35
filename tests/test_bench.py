"""Speed benchmark: rows, files and backend handling (no assertions on time values beyond > 0)."""

import csv
import json
import subprocess

import keras

from skinkeras import bench


def quiet(*args, **kwargs):
    """Echo that prints nothing."""


def test_bench_rows_and_files(tmp_path):
    rows = bench.bench_segmentation(archs=("unet", "deeplabv3plus"), encoders=("mobilenetv2",), image_size=64,
                                    batch_size=2, steps=1, out=tmp_path, echo=quiet)
    assert [row["arch"] for row in rows] == ["unet", "deeplabv3plus"]
    for row in rows:
        assert set(row) == set(bench.FIELDS)
        assert row["status"] == "ok", row["status"]
        assert row["backend"] == keras.backend.backend()
        assert (row["encoder"], row["image_size"], row["batch_size"]) == ("mobilenetv2", 64, 2)
        for name in ("build_s", "first_step_s", "step_s", "train_img_per_s", "predict_s", "size_mb"):
            assert row[name] > 0, name
        assert row["params"] > 0
    assert rows[0]["params"] != rows[1]["params"]

    with open(tmp_path / "bench.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["arch"] for r in table] == ["unet", "deeplabv3plus"]
    assert list(table[0]) == list(bench.FIELDS)
    md = (tmp_path / "bench.md").read_text().strip().splitlines()
    assert len(md) == 2 + len(rows)
    assert md[0].startswith("| backend | devices | arch |") and "unet" in md[2] and "deeplabv3plus" in md[3]


def test_unknown_backend_is_a_row_not_an_error():
    echoed = []
    rows = bench.bench_segmentation(archs=("unet", "unetpp"), encoders=("mobilenetv2",), image_size=64,
                                    batch_size=2, steps=1, backends=["nonexistent_backend"], echo=echoed.append)
    assert [row["arch"] for row in rows] == ["unet", "unetpp"]
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
