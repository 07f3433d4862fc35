"""Lesion-grouped and per-image stratified splits, split files, controlled balancing and its plot."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinkeras.data.classification import (
    apply_split, balance_plan, class_counts, default_cap_floor, epoch_prior, plot_class_distribution, read_split,
    split_records, write_split,
)
from skinkeras.data.ham10000 import CLASSES as HAM_CLASSES
from skinkeras.data.ham10000 import load_ham10000
from skinkeras.data.isic2019 import load_isic2019
from skinkeras.data.synthetic import make_synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    paths = make_synthetic(out, n=60, seed=0, image_size=(64, 48), datasets=("ham10000", "isic2019"))
    ham, _ = load_ham10000(paths["ham10000"])
    isic, _ = load_isic2019(paths["isic2019"])
    return {"ham10000": ham, "isic2019": isic}


@pytest.mark.parametrize("name", ["ham10000", "isic2019"])
def test_lesion_split_keeps_lesions_on_one_side_and_every_class_everywhere(records, name):
    df = records[name]
    # The generator guarantees 3 lesions per class at this size, which the presence guarantee needs.
    assert df.groupby("dx")["lesion_id"].nunique().min() >= 3
    assert df.groupby("lesion_id").size().max() > 1  # grouping must actually matter
    split = split_records(df, seed=3)
    assert split.groupby("lesion_id")["subset"].nunique().max() == 1
    table = pd.crosstab(split["dx"], split["subset"])
    assert list(table.columns) == ["test", "train", "val"] and (table > 0).all().all()
    pd.testing.assert_frame_equal(split.drop(columns="subset"), df)


def test_split_is_deterministic_and_independent_of_row_order(records):
    df = records["isic2019"]
    a = split_records(df, seed=1)
    b = split_records(df, seed=1)
    assert (a["subset"] == b["subset"]).all()
    shuffled = split_records(df.sample(frac=1, random_state=5), seed=1).set_index("image_id")["subset"]
    assert (shuffled.loc[a["image_id"]].to_numpy() == a["subset"].to_numpy()).all()
    others = [split_records(df, seed=s)["subset"] for s in (2, 3, 4)]
    assert any((o != a["subset"]).any() for o in others)


def test_image_split_is_stratified():
    labels = np.repeat(np.arange(4), [200, 60, 21, 3])
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(labels.size)],
                       "lesion_id": ["same"] * labels.size, "label": labels})
    split = split_records(df, by="image", seed=0)
    table = pd.crosstab(split["label"], split["subset"])
    for label, n in zip(range(3), (200, 60, 21)):
        for subset, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs(table.loc[label, subset] - frac * n) <= 1
    # A class with as many images as subsets still appears in each one.
    assert list(table.loc[3]) == [1, 1, 1]
    # by="lesion" on a single shared lesion puts everything on one side: the image split ignores it.
    assert split_records(df, by="lesion")["subset"].nunique() == 1


def test_two_way_split_and_bad_arguments(records):
    df = records["ham10000"]
    split = split_records(df, fractions=(0.8, 0.2))
    assert set(split["subset"]) == {"train", "val"}
    assert split.groupby("lesion_id")["subset"].nunique().max() == 1
    with pytest.raises(ValueError, match="sum to 1"):
        split_records(df, fractions=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="lesion, image"):
        split_records(df, by="patient")


def test_split_file_round_trip(records, tmp_path):
    split = split_records(records["ham10000"], seed=0)
    path = write_split(split, tmp_path / "split.csv")
    back = read_split(path)
    assert list(back["image_id"]) == list(split["image_id"])
    assert list(back["subset"]) == list(split["subset"])
    assert back["label"].dtype == np.int64
    again, problems = apply_split(records["ham10000"], back)
    assert problems == [] and list(again["subset"]) == list(split["subset"])
    partial, problems = apply_split(records["ham10000"], back.iloc[1:])
    assert len(partial) == len(split) - 1 and problems[0][0] == split["image_id"].iat[0]


def test_balance_plan_counts_exactly_as_documented():
    labels = np.repeat(np.arange(4), [100, 30, 10, 3])
    idx, is_copy = balance_plan(labels, cap=50, floor=20, seed=0)
    after = class_counts(labels[idx], 4)
    # 100 > cap -> 50; 30 between floor and cap -> 30; 10 < floor -> 20; 3 -> min(20, 5 * 3) = 15.
    np.testing.assert_array_equal(after, [50, 30, 20, 15])
    np.testing.assert_array_equal(class_counts(labels[idx[is_copy]], 4), [0, 0, 10, 12])
    originals = idx[~is_copy]
    assert len(set(originals)) == originals.size  # the cap subsamples without replacement
    assert set(originals) >= set(np.flatnonzero(labels > 0))  # no minority image is dropped
    # Copies are spread evenly: each image of the 10 twice, each of the 3 five times.
    np.testing.assert_array_equal(np.bincount(idx, minlength=labels.size)[labels == 2], 2)
    np.testing.assert_array_equal(np.bincount(idx, minlength=labels.size)[labels == 3], 5)
    idx2, _ = balance_plan(labels, cap=50, floor=20, seed=0, max_factor=None)
    np.testing.assert_array_equal(class_counts(labels[idx2], 4), [50, 30, 20, 20])
    # Same seed same plan; another seed another majority subset.
    np.testing.assert_array_equal(balance_plan(labels, cap=50, floor=20, seed=0)[0], idx)
    assert set(balance_plan(labels, cap=50, floor=20, seed=1)[0]) != set(idx)


def test_epoch_prior_is_the_share_of_each_class_in_a_balanced_epoch():
    labels = np.repeat(np.arange(5), [100, 30, 10, 3, 0])
    for cap, floor in ((50, 20), (None, None)):
        for seed in (0, 1):
            idx, _ = balance_plan(labels, cap=cap, floor=floor, seed=seed)
            np.testing.assert_allclose(epoch_prior(labels, 5, cap=cap, floor=floor),
                                       class_counts(labels[idx], 5) / idx.size)
    np.testing.assert_allclose(epoch_prior(labels, 5, cap=50, floor=20), np.array([50, 30, 20, 15, 0]) / 115)
    np.testing.assert_allclose(epoch_prior(labels, 5, balance=False), np.array([100, 30, 10, 3, 0]) / 143)


def test_balance_defaults_scale_with_the_data():
    # HAM10000's 70 % lesion-grouped training split (7009 images, mean 1001): cap 2003, floor 501.
    counts = [229, 360, 769, 81, 778, 4692, 100]
    labels = np.repeat(np.arange(7), counts)
    assert default_cap_floor(labels) == (2003, 501)
    idx, is_copy = balance_plan(labels)
    # akiec, bcc -> floor; df 81 -> 5 * 81 = 405 and vasc 100 -> 500 (max_factor 5); bkl, mel untouched; nv -> cap.
    np.testing.assert_array_equal(class_counts(labels[idx], 7), [501, 501, 769, 405, 778, 2003, 500])
    strings = np.array(HAM_CLASSES)[labels]
    idx_s, copy_s = balance_plan(strings)
    np.testing.assert_array_equal(idx_s, idx)
    np.testing.assert_array_equal(copy_s, is_copy)
    with pytest.raises(ValueError, match="floor <= cap"):
        balance_plan(labels, cap=10, floor=20)


def test_plot_class_distribution_writes_png(tmp_path):
    labels = np.repeat(np.arange(7), [229, 360, 769, 81, 778, 4692, 100])
    idx, is_copy = balance_plan(labels)
    path = plot_class_distribution(class_counts(labels, 7), class_counts(labels[idx], 7), HAM_CLASSES,
                                   tmp_path / "balance.png", "HAM10000 training set",
                                   after_copies=class_counts(labels[idx[is_copy]], 7))
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 500
    plot_class_distribution(dict(zip(HAM_CLASSES, range(7))), dict(zip(HAM_CLASSES, range(7))), HAM_CLASSES,
                            tmp_path / "dicts.png", "t")
    assert (tmp_path / "dicts.png").stat().st_size > 0


def test_record_modules_import_no_deep_learning_framework():
    # `import skinkeras` registers the layers (so it loads Keras); the record readers themselves stay
    # framework-free: no framework import and no import of a skinkeras module outside skinkeras.data, but
    # skinkeras.runs (the one reader of run-folder files such as split.csv), which imports no framework itself.
    frameworks = {"keras", "jax", "tensorflow", "torch"}
    for name in ("ham10000", "isic2019", "metadata", "classification", "isic2018", "masks"):
        tree = ast.parse((ROOT / "skinkeras" / "data" / f"{name}.py").read_text())
        modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        modules += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        modules += [f"{node.module}.{alias.name}" for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module == "skinkeras" for alias in node.names]
        bad = [m for m in modules if m.split(".")[0] in frameworks
               or (m.startswith("skinkeras") and not m.startswith(("skinkeras.data.", "skinkeras.runs"))
                   and m != "skinkeras")]
        assert not bad, (name, bad)
    # runs.py: no framework and no other skinkeras module where it is imported (Keras only inside `environment`)
    tree = ast.parse((ROOT / "skinkeras" / "runs.py").read_text())
    top = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    top += [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert not [m for m in top if m.split(".")[0] in frameworks or m.startswith("skinkeras")], top
