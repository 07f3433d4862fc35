"""Tests for the synthetic dermoscopy dataset generator (no Keras needed)."""

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from skinkeras.data.synthetic import (
    DATASETS,
    DEFAULT_DATASETS,
    HAM10000_CLASSES,
    HAM10000_LOCALIZATIONS,
    ISIC2019_CLASSES,
    ISIC2019_SITES,
    expected_image_count,
    make_synthetic,
)

N = 40
SIZE = (256, 192)


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _luminance(img):
    a = np.asarray(img.convert("RGB"), np.float64)
    return a @ np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    calls = []
    folders = make_synthetic(root, n=N, seed=0, image_size=SIZE, progress=lambda: calls.append(1))
    return root, folders, len(calls)


@pytest.fixture(scope="module")
def ham_rows(synth):
    root, _, _ = synth
    return _read_csv(root / "ham10000" / "HAM10000_metadata.csv")


def _ham_image(root, image_id):
    paths = list((root / "ham10000").glob(f"HAM10000_images_part_*/{image_id}.jpg"))
    assert len(paths) == 1, image_id
    return paths[0]


def test_returns_dataset_folders_and_reports_progress(synth):
    root, folders, calls = synth
    assert set(folders) == {"isic2018", "ham10000", "isic2019"}
    for name, folder in folders.items():
        assert folder == str(root / name) and (root / name).is_dir()
    assert calls == expected_image_count(N) == N + max(4, N // 10) + 2 * N


def test_default_is_the_first_three_and_new_datasets_come_last():
    # A dataset's position keys its random stream: appending keeps the older files byte-identical.
    assert DEFAULT_DATASETS == ("isic2018", "ham10000", "isic2019") == DATASETS[:3]
    assert DATASETS[3:] == ("ph2", "isic2017")
    assert expected_image_count(40, DATASETS) == expected_image_count(40) + 40 + (40 + 2 * 4)


def test_isic2018_layout_sizes_and_masks(synth):
    root, _, _ = synth
    base = root / "isic2018"
    for split, count, first in [("Training", N, 0), ("Validation", max(4, N // 10), N)]:
        images = sorted((base / f"ISIC2018_Task1-2_{split}_Input").glob("*.jpg"))
        masks = sorted((base / f"ISIC2018_Task1_{split}_GroundTruth").glob("*.png"))
        assert len(images) == len(masks) == count
        assert images[0].name == f"ISIC_{first:07d}.jpg"
        for img_path, mask_path in zip(images, masks):
            assert mask_path.name == img_path.stem + "_segmentation.png"
            with Image.open(img_path) as img:
                assert img.mode == "RGB" and img.size == SIZE
            with Image.open(mask_path) as mask:
                assert mask.mode == "L" and mask.size == SIZE
                m = np.asarray(mask)
            assert set(np.unique(m)) <= {0, 255}
            assert 0.05 < (m == 255).mean() < 0.7


def test_lesion_darker_than_surrounding_skin(synth):
    root, _, _ = synth
    masks = sorted((root / "isic2018" / "ISIC2018_Task1_Training_GroundTruth").glob("*.png"))
    masks += sorted((root / "ham10000" / "HAM10000_segmentations_lesion_tschandl").glob("*.png"))
    for mask_path in masks:
        image_id = mask_path.name.replace("_segmentation.png", "")
        img_path = next(root.glob(f"*/*/{image_id}.jpg"))
        lum = _luminance(Image.open(img_path))
        lesion = np.asarray(Image.open(mask_path)) == 255
        # Compare with a band of skin just outside the lesion: the corners may be vignetted.
        band = ndimage.binary_dilation(lesion, iterations=8) & ~lesion
        assert lum[lesion].mean() < lum[band].mean() - 10, image_id


def test_ham10000_csv_and_layout(synth, ham_rows):
    root, _, _ = synth
    header, rows = ham_rows
    assert header == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert len(rows) == N
    ids = sorted(r["image_id"] for r in rows)
    assert ids == [f"ISIC_{24306 + i:07d}" for i in range(N)]
    part1 = sorted(p.stem for p in (root / "ham10000" / "HAM10000_images_part_1").glob("*.jpg"))
    part2 = sorted(p.stem for p in (root / "ham10000" / "HAM10000_images_part_2").glob("*.jpg"))
    assert part1 == ids[: (N + 1) // 2] and part2 == ids[(N + 1) // 2:]
    seg = root / "ham10000" / "HAM10000_segmentations_lesion_tschandl"
    for image_id in ids:
        with Image.open(seg / f"{image_id}_segmentation.png") as mask:
            assert mask.mode == "L" and mask.size == SIZE
        with Image.open(_ham_image(root, image_id)) as img:
            assert img.size == SIZE

    assert {r["dx"] for r in rows} == set(HAM10000_CLASSES)
    lesions = {}
    for r in rows:
        lesions.setdefault(r["lesion_id"], []).append(r)
        assert r["lesion_id"].startswith("HAM_") and len(r["lesion_id"]) == 11
        assert r["dx_type"] in {"histo", "follow_up", "consensus", "confocal"}
        assert r["sex"] in {"male", "female", "unknown"}
        assert r["localization"] in HAM10000_LOCALIZATIONS
        if r["age"]:
            assert float(r["age"]) % 5 == 0 and 0 <= float(r["age"]) <= 85
    for dx in HAM10000_CLASSES:
        assert sum(rs[0]["dx"] == dx for rs in lesions.values()) >= 3, dx
    assert any(len(rs) > 1 for rs in lesions.values())
    # A lesion keeps its diagnosis and patient data across its images.
    for rs in lesions.values():
        assert len({(r["dx"], r["age"], r["sex"], r["localization"]) for r in rs}) == 1


def test_isic2019_csvs_and_layout(synth):
    root, _, _ = synth
    base = root / "isic2019"
    gt_header, gt = _read_csv(base / "ISIC_2019_Training_GroundTruth.csv")
    meta_header, meta = _read_csv(base / "ISIC_2019_Training_Metadata.csv")
    assert gt_header == ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    assert meta_header == ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    assert [r["image"] for r in gt] == [r["image"] for r in meta] == [
        f"ISIC_{50000 + i:07d}" for i in range(N)]
    counts = dict.fromkeys(ISIC2019_CLASSES, 0)
    for r in gt:
        assert all(r[c] in {"0.0", "1.0"} for c in gt_header[1:])
        assert sum(float(r[c]) for c in ISIC2019_CLASSES) == 1.0 and r["UNK"] == "0.0"
        counts[next(c for c in ISIC2019_CLASSES if r[c] == "1.0")] += 1
        with Image.open(base / "ISIC_2019_Training_Input" / f"{r['image']}.jpg") as img:
            assert img.size == SIZE
    assert min(counts.values()) >= 3, counts
    for r in meta:
        assert r["anatom_site_general"] in set(ISIC2019_SITES) | {""}
        assert r["sex"] in {"male", "female", ""}
        if r["age_approx"]:
            assert float(r["age_approx"]) % 5 == 0


def test_mel_and_nv_look_different(synth, ham_rows):
    root, _, _ = synth
    _, rows = ham_rows
    stats = {"mel": [], "nv": []}
    for r in rows:
        if r["dx"] in stats:
            lum = _luminance(Image.open(_ham_image(root, r["image_id"])))
            seg = root / "ham10000" / "HAM10000_segmentations_lesion_tschandl"
            lesion = np.asarray(Image.open(seg / f"{r['image_id']}_segmentation.png")) == 255
            stats[r["dx"]].append((lum[lesion].mean(), lum[lesion].std(), lesion.mean()))
    mel, nv = np.array(stats["mel"]), np.array(stats["nv"])
    assert len(mel) >= 3 and len(nv) >= 3
    assert mel[:, 0].mean() < nv[:, 0].mean() - 15   # darker
    assert mel[:, 1].mean() > nv[:, 1].mean() + 5    # more varied (multi-coloured, irregular)
    assert mel[:, 2].mean() > nv[:, 2].mean()        # larger


def test_deterministic_per_seed(synth, tmp_path):
    root, _, _ = synth
    # Each dataset has its own random stream, so generating a subset reproduces it exactly.
    make_synthetic(tmp_path / "same", n=N, seed=0, image_size=SIZE, datasets=("ham10000", "isic2019"))
    files = [
        "ham10000/HAM10000_metadata.csv",
        "ham10000/HAM10000_segmentations_lesion_tschandl/ISIC_0024310_segmentation.png",
        "isic2019/ISIC_2019_Training_GroundTruth.csv",
        "isic2019/ISIC_2019_Training_Metadata.csv",
        "isic2019/ISIC_2019_Training_Input/ISIC_0050007.jpg",
    ]
    for rel in files:
        assert _digest(root / rel) == _digest(tmp_path / "same" / rel), rel
    assert _digest(_ham_image(root, "ISIC_0024306")) == _digest(
        _ham_image(tmp_path / "same", "ISIC_0024306"))

    make_synthetic(tmp_path / "other", n=N, seed=1, image_size=SIZE, datasets=("ham10000",))
    rel = "ham10000/HAM10000_metadata.csv"
    assert _digest(root / rel) != _digest(tmp_path / "other" / rel)
    other = tmp_path / "other" / "ham10000"
    first = next(other.glob("HAM10000_images_part_1/ISIC_0024306.jpg"))
    assert _digest(_ham_image(root, "ISIC_0024306")) != _digest(first)


def test_custom_size_and_small_n(tmp_path):
    folders = make_synthetic(tmp_path, n=3, seed=5, image_size=(96, 64), datasets="isic2018")
    assert list(folders) == ["isic2018"]
    base = tmp_path / "isic2018"
    assert folders["isic2018"] == str(base)
    images = sorted(base.glob("*_Input/*.jpg"))
    assert len(images) == 3 + 4
    for path in images:
        assert Image.open(path).size == (96, 64)
    mask = next(base.glob("*Training_GroundTruth/*.png"))
    assert Image.open(mask).size == (96, 64)


@pytest.mark.parametrize("kwargs", [dict(datasets=("isic2020",)), dict(n=0), dict(seed=-1)])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic(tmp_path, **kwargs)
