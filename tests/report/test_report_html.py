"""The HTML run report: which folders it reads, how it groups them, and what the page holds."""

import json
import re

import numpy as np
import pytest

from skinkeras.classification.evaluate import isic_csv
from skinkeras.report import html as report
from skinkeras.report.figures import WorstImages


def test_folder_kinds_of_the_demo(tiny_demo):
    out, _ = tiny_demo
    kinds = {name: report.folder_kind(out / name) for name in ("seg-train", "seg-eval", "cls-tdbn", "cls-eval-tdbn",
                                                               "gradcam")}
    assert kinds == {"seg-train": "seg-train", "seg-eval": "seg-eval", "cls-tdbn": "cls-train",
                     "cls-eval-tdbn": "cls-eval", "gradcam": "gradcam"}


def test_not_a_run_folder_is_one_line_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))) as err:
        report.folder_kind(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        report.folder_kind(tmp_path / "missing")


def test_evaluations_and_cams_join_the_run_whose_model_they_scored(tiny_demo):
    out, _ = tiny_demo
    names = ["seg-train", "seg-eval", "cls-tdbn", "cls-original_only", "cls-eval-tdbn", "cls-eval-original_only",
             "gradcam"]
    columns, cams, benches = report.group_columns([out / n for n in names])
    by_name = {c.name: c for c in columns}
    assert list(by_name) == ["seg-train", "cls-tdbn", "cls-original_only"] and not benches
    assert [os_base(f.path) for f in by_name["seg-train"].evals] == ["seg-eval"]
    assert [os_base(f.path) for f in by_name["cls-tdbn"].evals] == ["cls-eval-tdbn"]
    assert [os_base(f.path) for f in by_name["cls-original_only"].evals] == ["cls-eval-original_only"]
    assert [os_base(f.path) for f in by_name["cls-tdbn"].cams] == ["gradcam"] and len(cams) == 1
    # An evaluation given without its training run is a column of its own.
    alone, _, _ = report.group_columns([out / "cls-eval-tdbn"])
    assert [c.name for c in alone] == ["cls-eval-tdbn"] and alone[0].test["images"] > 0


def os_base(path):
    return path.rstrip("/").split("/")[-1]


def test_demo_report_is_self_contained_and_shows_the_scores(tiny_demo):
    out, _ = tiny_demo
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for section in ("overview", "config", "environment", "data", "curves", "metrics", "confusion", "roc",
                    "per-class", "trust", "worst", "gradcam"):
        assert f'<section id="{section}">' in page, section
    seg = json.loads((out / "seg-eval" / "metrics.json").read_text())
    cls = json.loads((out / "cls-eval-tdbn" / "metrics.json").read_text())
    # Each score with its recorded 95% interval.
    for name, metrics in (("dice", seg), ("balanced_accuracy", cls)):
        low, high = metrics["intervals"][name]
        assert (f'{name.replace("_", " ")} {metrics[name]:.3f} <span class="ci">[{low:.3f}, {high:.3f}]</span> '
                f'on {metrics["images"]}') in page, name
    # The balanced decision's scores (cls-eval's prior_corrected block) in their own rows, with their intervals.
    balanced = cls["prior_corrected"]
    low, high = balanced["intervals"]["balanced_accuracy"]
    row = page.split("balanced accuracy, balanced decision</td>")[1].split("</tr>")[0]
    assert f'{balanced["balanced_accuracy"]:.3f} <span class="ci">[{low:.3f}, {high:.3f}]</span>' in row
    # The trust section: raw and calibrated ECE with intervals, the operating points, every subgroup row, the
    # flagged ones highlighted.
    trust = page.split('<section id="trust">')[1].split("</section>")[0]
    ece = cls["calibration"]["raw"]
    assert f'{ece["ece"]:.3f} <span class="ci">[{ece["intervals"]["ece"][0]:.3f}' in trust
    assert "reliability diagram" in trust and "risk-coverage curve" in trust
    tdbn_cell = trust.split("<h4>cls-eval-tdbn</h4>")[1].split('<div class="cell">')[0]  # its own column
    groups = (out / "cls-eval-tdbn" / "subgroups.csv").read_text().splitlines()[1:]
    assert tdbn_cell.count("<tr class=") == len(groups)
    assert tdbn_cell.count('<tr class="flag">') == len(cls["subgroups"]["flagged"])
    # The worst segmentations are the lowest-Dice rows of per_image.csv.
    worst = (out / "seg-eval" / "worst.csv").read_text().splitlines()[1:]
    per_image = (out / "seg-eval" / "per_image.csv").read_text().splitlines()
    header = per_image[0].split(",")
    dice = sorted(float(r.split(",")[header.index("dice")]) for r in per_image[1:])
    assert [round(float(r.split(",")[1 + 0]), 4) for r in worst][:1] == [round(dice[0], 4)]


def test_config_section_lists_only_the_fields_that_differ(tiny_demo):
    out, _ = tiny_demo
    page = report.build_report([out / "cls-tdbn", out / "cls-original_only"])
    config = page.split('<section id="config">')[1].split("</section>")[0]
    table = config.split("<details>")[0]
    assert ">arch<" in table and "&quot;tdbn&quot;" in table and "&quot;original_only&quot;" in table
    assert "2 of " in config  # arch and out
    assert ">encoder<" not in table and ">encoder<" in config  # the same in both: only under "All fields"


def test_intervals_are_printed_beside_the_number():
    metrics = {"dice": 0.8123, "intervals": {"dice": [0.774, 0.851], "jaccard": {"low": 0.6, "high": 0.7}},
               "jaccard": 0.65}
    assert report._with_interval(metrics, "dice") == '0.812 <span class="ci">[0.774, 0.851]</span>'
    assert report._with_interval(metrics, "jaccard") == '0.650 <span class="ci">[0.600, 0.700]</span>'
    assert report._with_interval({"dice": None}, "dice") == "&ndash;"


def test_isic_prediction_files_read_back(tmp_path):
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=5)
    labels = np.array([0, 6, 5, 4, 4])
    ids = [f"ISIC_{i:07d}" for i in range(5)]
    isic_csv(ids, probs, classes, "ham10000", tmp_path / "p.csv")
    isic_csv(ids, np.eye(7)[labels], classes, "ham10000", tmp_path / "t.csv")
    read_ids, read_labels, read_probs, names = report.read_isic_predictions(tmp_path / "p.csv", tmp_path / "t.csv")
    assert read_ids == ids
    # The ISIC columns come in the official order (MEL, NV, BCC, AKIEC, BKL, DF, VASC); truth follows them.
    assert [names[i].lower() for i in read_labels] == [classes[i] for i in labels]
    np.testing.assert_allclose(read_probs[np.arange(5), read_labels], probs[np.arange(5), labels], atol=1e-8)


def test_worst_images_keep_the_k_lowest(tmp_path):
    worst = WorstImages(k=3)
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    for i, dice in enumerate([0.9, 0.2, 0.7, 0.95, 0.1, 0.5]):
        worst.add(f"ISIC_{i:07d}", image, mask, mask, {"dice": dice, "jaccard": dice / 2})
    worst.save(tmp_path)
    rows = (tmp_path / "worst.csv").read_text().splitlines()
    assert rows[0] == "image_id,dice,jaccard"
    assert [r.split(",")[0] for r in rows[1:]] == ["ISIC_0000004", "ISIC_0000001", "ISIC_0000005"]
    assert sorted(p.name for p in (tmp_path / "worst").iterdir()) == ["ISIC_0000001.png", "ISIC_0000004.png",
                                                                      "ISIC_0000005.png"]


def test_a_report_that_cannot_be_written_leaves_nothing_and_never_fails_the_run(tmp_path, monkeypatch, capsys):
    import errno
    import os

    from skinkeras import bench

    bench.write_results([bench._row("torch", "unet", "mobilenetv2", 64, 2, "ok")], tmp_path)

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        report.write_report([tmp_path], tmp_path / "report.html")
    assert not list(tmp_path.glob("report.html*"))
    assert report.write_run_report(tmp_path) is None
    assert "could not write" in capsys.readouterr().out and not list(tmp_path.glob("report.html*"))
