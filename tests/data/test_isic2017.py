"""ISIC 2017 records and pairs: three subsets, superpixel decoys, metadata with "unknown", bad rows, layout errors; the CLI."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from skinkeras.data.classification import RECORD_COLUMNS
from skinkeras.data.isic2017 import (
    CLASSES, HAM10000_MAP, isic2017_pairs, load_isic2017, official_paths, read_isic2017_labels,
)
from skinkeras.data.masks import read_mask
from skinkeras.data.synthetic import expected_image_count, make_synthetic

N = 12
SIZE = (48, 40)
SUBSETS = {"train": ("Training", N), "val": ("Validation", 4), "test": ("Test_v2", 4)}


@pytest.fixture(scope="module")
def isic(tmp_path_factory):
    out = tmp_path_factory.mktemp("isic2017")
    calls = []
    folder = make_synthetic(out, n=N, seed=0, image_size=SIZE, datasets=("isic2017",),
                            progress=lambda: calls.append(1))["isic2017"]
    assert len(calls) == expected_image_count(N, ("isic2017",)) == N + 2 * 4
    return Path(folder)


def _meta(isic, part):
    path = isic / f"ISIC-2017_{part}_Data" / f"ISIC-2017_{part}_Data_metadata.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("image_id")


def test_synthetic_layout_is_the_official_one(isic):
    for part, count in SUBSETS.values():
        data = isic / f"ISIC-2017_{part}_Data"
        assert len(list(data.glob("ISIC_???????.jpg"))) == count
        assert len(list(data.glob("*_superpixels.png"))) == 2
        assert len(list((isic / f"ISIC-2017_{part}_Part1_GroundTruth").glob("*_segmentation.png"))) == count
        gt = pd.read_csv(isic / f"ISIC-2017_{part}_Part3_GroundTruth.csv", dtype=str)
        assert list(gt.columns) == ["image_id", "melanoma", "seborrheic_keratosis"] and len(gt) == count
        assert set(gt["melanoma"]) | set(gt["seborrheic_keratosis"]) <= {"0.0", "1.0"}
        meta = _meta(isic, part)
        assert list(meta.columns) == ["age_approximate", "sex"] and (meta["age_approximate"] == "unknown").any()


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_loader_gives_records_with_labels_and_metadata(isic, subset):
    part, count = SUBSETS[subset]
    df, problems = load_isic2017(isic, subset)
    assert problems == []
    assert len(df) == count and list(df.columns) == list(RECORD_COLUMNS) + ["diagnosis"]
    assert set(df["diagnosis"]) == set(CLASSES)
    assert (df["label"] == df["diagnosis"].map(CLASSES.index)).all()
    assert (df["dx"] == df["diagnosis"].map(HAM10000_MAP)).all()
    assert (df["lesion_id"] == df["image_id"]).all() and (df["site"] == "").all()
    assert all(os.path.basename(p) == f"{i}.jpg" for i, p in zip(df["image_id"], df["image_path"]))
    meta = _meta(isic, part).loc[df["image_id"]]
    unknown = (meta["age_approximate"] == "unknown").to_numpy()
    np.testing.assert_array_equal(df["age"].isna(), unknown)
    np.testing.assert_array_equal(df["age"][~unknown], meta["age_approximate"][~unknown].astype(float))
    np.testing.assert_array_equal(df["sex"], meta["sex"].replace("unknown", ""))


def test_pairs_skip_superpixels_and_masks_match_images(isic):
    pairs, problems = isic2017_pairs(isic, "train")
    assert problems == [] and len(pairs) == N
    assert not any("superpixels" in p.image_path for p in pairs)
    for pair in pairs:
        assert pair.mask_path.endswith(f"{pair.image_id}_segmentation.png")
        mask = read_mask(pair.mask_path)
        with Image.open(pair.image_path) as img:
            assert mask.shape == (img.size[1], img.size[0])
        assert 0 < mask.mean() < 1
    assert len(isic2017_pairs(isic)[0]) == 4  # default subset: test


def test_missing_metadata_csv_leaves_age_and_sex_missing(isic, tmp_path):
    root = tmp_path / "isic"
    shutil.copytree(isic, root)
    os.remove(official_paths(root, "val")["metadata_csv"])
    df, problems = load_isic2017(root, "val")
    assert problems == [] and len(df) == 4
    assert df["age"].isna().all() and (df["sex"] == "").all()


def test_bad_label_rows_and_missing_images_are_problem_rows(isic, tmp_path):
    root = tmp_path / "isic"
    shutil.copytree(isic, root)
    csv = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    gt = pd.read_csv(csv, dtype=str)
    both, text, gone = gt["image_id"].iloc[[1, 2, 3]]
    gt.loc[1, ["melanoma", "seborrheic_keratosis"]] = "1.0"
    gt.loc[2, "melanoma"] = "yes"
    gt.to_csv(csv, index=False)
    os.remove(root / "ISIC-2017_Training_Data" / f"{gone}.jpg")
    df, problems = load_isic2017(root, "train")
    assert len(df) == N - 3 and not {both, text, gone} & set(df["image_id"])
    reasons = dict(problems)
    assert set(reasons) == {both, text, gone}
    assert "both" in reasons[both] and "line 3" in reasons[both] and str(csv) in reasons[both]
    assert "'yes'" in reasons[text] and "no image" in reasons[gone]
    # The superpixel file of an image is no stand-in for the image itself.
    shutil.copy(root / "ISIC-2017_Training_Data" / f"{gt['image_id'].iloc[0]}_superpixels.png",
                root / "ISIC-2017_Training_Data" / f"{gone}_superpixels.png")
    assert gone in dict(load_isic2017(root, "train")[1])
    labels, label_problems = read_isic2017_labels(csv)
    assert len(labels) == N - 2 and len(label_problems) == 2


def test_nested_unzip_and_test_without_v2_are_found(isic, tmp_path):
    root = tmp_path / "isic"
    for name in ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"):
        plain = name.replace("_v2", "")
        shutil.copytree(isic / name, root / plain / plain)
    shutil.copy(isic / "ISIC-2017_Test_v2_Part3_GroundTruth.csv", root / "ISIC-2017_Test_Part3_GroundTruth.csv")
    for path in (root / "ISIC-2017_Test_Data" / "ISIC-2017_Test_Data").glob("*_metadata.csv"):
        path.rename(path.with_name("ISIC-2017_Test_Data_metadata.csv"))
    expected, _ = load_isic2017(isic)
    df, problems = load_isic2017(root)
    assert problems == []
    pd.testing.assert_frame_equal(df.drop(columns="image_path"), expected.drop(columns="image_path"))
    assert len(isic2017_pairs(root)[0]) == 4


def test_not_an_isic2017_folder_is_one_line(isic, tmp_path):
    for call in (load_isic2017, isic2017_pairs):
        with pytest.raises(FileNotFoundError) as err:
            call(tmp_path)
        assert "ISIC-2017_Test_v2_Data/" in str(err.value) and "\n" not in str(err.value)
    shutil.copytree(isic / "ISIC-2017_Validation_Data", tmp_path / "ISIC-2017_Validation_Data")
    with pytest.raises(FileNotFoundError) as err:
        load_isic2017(tmp_path, "val")
    assert "ISIC-2017_Validation_Part3_GroundTruth.csv" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        isic2017_pairs(tmp_path, "val")
    assert "ISIC-2017_Validation_Part1_GroundTruth/" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError) as err:
        load_isic2017(tmp_path, "training")
    assert "train, val, test" in str(err.value)


def test_make_synthetic_cli_writes_both_layouts(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["make-synthetic", str(tmp_path), "--n", "6", "--datasets", "ph2, isic2017"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"ph2: {tmp_path / 'ph2'}", f"isic2017: {tmp_path / 'isic2017'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isic2017", "ph2"]
    from skinkeras.data.ph2 import load_ph2

    assert len(load_ph2(tmp_path / "ph2")[0]) == 6
    assert len(load_isic2017(tmp_path / "isic2017", "train")[0]) == 6
    result = runner.invoke(cli, ["make-synthetic", str(tmp_path / "x"), "--datasets", "ph3"])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "ph3" in errors[0] and "isic2017" in errors[0]
