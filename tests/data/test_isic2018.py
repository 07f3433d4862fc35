"""Pairing images with masks in the official ISIC 2018 and plain folder layouts; splits."""

import numpy as np
import pytest
from PIL import Image

from skinkeras.data.isic2018 import OFFICIAL_FOLDERS, find_pairs, limit_pairs, split_pairs


def touch_image(path, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)


def test_official_layout_pairs_by_id_and_ignores_non_images(tmp_path):
    images, masks = (tmp_path / f for f in OFFICIAL_FOLDERS["train"])
    for i in (3, 1, 2):
        touch_image(images / f"ISIC_000000{i}.jpg")
        touch_image(masks / f"ISIC_000000{i}_segmentation.png")
    (images / "LICENSE.txt").write_text("licence")
    (images / "ATTRIBUTION.txt").write_text("attribution")
    pairs, problems = find_pairs(tmp_path)
    assert [p.image_id for p in pairs] == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert pairs[0].mask_path.endswith("ISIC_0000001_segmentation.png")
    assert problems == []


def test_plain_folders_with_ph2_and_tschandl_names(tmp_path):
    touch_image(tmp_path / "img" / "IMD002.bmp")
    touch_image(tmp_path / "msk" / "IMD002_lesion.bmp")
    touch_image(tmp_path / "img" / "ISIC_0024306.jpg")
    touch_image(tmp_path / "msk" / "ISIC_0024306_segmentation.png")
    touch_image(tmp_path / "img" / "plain.png")
    touch_image(tmp_path / "msk" / "plain.png")
    pairs, _ = find_pairs(images=tmp_path / "img", masks=tmp_path / "msk")
    assert {p.image_id: p.mask_path.rsplit("/", 1)[1] for p in pairs} == {
        "IMD002": "IMD002_lesion.bmp",
        "ISIC_0024306": "ISIC_0024306_segmentation.png",
        "plain": "plain.png",
    }


def test_missing_mask_is_listed_not_fatal(tmp_path):
    touch_image(tmp_path / "img" / "ISIC_0000001.jpg")
    touch_image(tmp_path / "img" / "ISIC_0000002.jpg")
    touch_image(tmp_path / "msk" / "ISIC_0000001_segmentation.png")
    pairs, problems = find_pairs(images=tmp_path / "img", masks=tmp_path / "msk")
    assert [p.image_id for p in pairs] == ["ISIC_0000001"]
    assert len(problems) == 1 and problems[0][0].endswith("ISIC_0000002.jpg")
    assert "no mask" in problems[0][1]


def test_empty_and_missing_folders_give_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images .* in .*empty"):
        find_pairs(images=tmp_path / "empty", masks=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="ISIC2018_Task1-2_Training_Input.*--images DIR --masks DIR"):
        find_pairs(tmp_path)
    with pytest.raises(ValueError, match="Unknown subset"):
        find_pairs(tmp_path, subset="holdout")


def test_limit_is_seeded_and_split_is_disjoint(tmp_path):
    for i in range(20):
        touch_image(tmp_path / "img" / f"ISIC_{i:07d}.jpg")
        touch_image(tmp_path / "msk" / f"ISIC_{i:07d}_segmentation.png")
    pairs, _ = find_pairs(images=tmp_path / "img", masks=tmp_path / "msk")
    a, b = limit_pairs(pairs, 8, seed=3), limit_pairs(pairs, 8, seed=3)
    assert a == b and len(a) == 8
    assert limit_pairs(pairs, 8, seed=4) != a
    train, val = split_pairs(pairs, 0.2, seed=0)
    assert len(train) == 16 and len(val) == 4
    assert not {p.image_id for p in train} & {p.image_id for p in val}
    assert split_pairs(pairs, 0.2, seed=0) == (train, val)


@pytest.mark.shared_data
def test_shared_isic2018_sample_and_ham10000_masks(shared_data):
    pairs, problems = find_pairs(shared_data / "isic2018_task1_sample")
    assert len(pairs) == 40 and problems == []
    ham, problems = find_pairs(images=shared_data / "ham10000" / "HAM10000_images",
                               masks=shared_data / "ham10000" / "HAM10000_segmentations_lesion_tschandl")
    assert len(ham) == 10012 and problems == []
