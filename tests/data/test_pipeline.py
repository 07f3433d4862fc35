"""Image reading of every mode, pair loading with bad files, augmentation alignment, batches."""

import numpy as np
import pytest
from PIL import Image

from skinkeras.data.isic2018 import Pair
from skinkeras.data.pipeline import (
    ImageReadError,
    SegmentationDataset,
    augment_pair,
    load_pairs,
    read_rgb,
)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "RGB"])
def test_read_rgb_any_mode(tmp_path, mode):
    base = np.linspace(0, 255, 12 * 10).reshape(10, 12).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray(base.astype(np.uint16) * 257)
    elif mode == "RGB":
        img = Image.fromarray(np.stack([base] * 3, -1))
    else:
        img = Image.fromarray(base).convert(mode)
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    img.save(path)
    rgb = read_rgb(path)
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    if mode in ("L", "I;16", "RGB", "RGBA"):
        np.testing.assert_allclose(rgb[..., 0], base, atol=1)


def test_truncated_image_gives_one_line_error(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    bad = tmp_path / "ISIC_0000009.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageReadError) as info:
        read_rgb(bad)
    message = str(info.value)
    assert "ISIC_0000009.jpg" in message and "\n" not in message


def write_pair(folder, name, size=(40, 30), mask_size=None, value=255):
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    image = np.full((h, w, 3), 200, np.uint8)
    mw, mh = mask_size or size
    mask = np.zeros((mh, mw), np.uint8)
    mask[mh // 4 : 3 * mh // 4, mw // 4 : 3 * mw // 4] = value
    Image.fromarray(image).save(folder / f"{name}.png")
    Image.fromarray(mask).save(folder / f"{name}_segmentation.png")
    return Pair(name, str(folder / f"{name}.png"), str(folder / f"{name}_segmentation.png"))


def test_load_pairs_skips_bad_files_and_lists_them(tmp_path):
    good = write_pair(tmp_path, "ISIC_0000001")
    other_size = write_pair(tmp_path, "ISIC_0000002", mask_size=(20, 20))
    truncated = write_pair(tmp_path, "ISIC_0000003")
    with open(truncated.image_path, "r+b") as f:
        f.truncate(60)
    images, masks, kept, skipped = load_pairs([good, other_size, truncated], (32, 32), progress=False)
    assert images.shape == (1, 32, 32, 3) and masks.shape == (1, 32, 32, 1)
    assert kept == [good]
    reasons = dict(skipped)
    assert "20x20" in reasons[other_size.image_path] and "40x30" in reasons[other_size.image_path]
    assert other_size.mask_path in reasons[other_size.image_path]
    assert truncated.image_path in reasons
    assert set(np.unique(masks)) == {0, 1}


def test_load_pairs_all_bad_raises(tmp_path):
    bad = write_pair(tmp_path, "ISIC_0000004", mask_size=(10, 10))
    with pytest.raises(ValueError, match="None of the 1 images"):
        load_pairs([bad], (32, 32), progress=False)


def test_augmentation_moves_image_and_mask_together():
    # The mask marks exactly the red pixels; after flip + rotation it must still do so.
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64, 1), np.uint8)
    image[10:30, 5:25, 0] = 255
    mask[10:30, 5:25, 0] = 1
    flipped_once = rotated_once = False
    for _ in range(20):
        aug_image, aug_mask = augment_pair(image, mask, rng, flip_prob=0.5, max_rotation=15)
        red = aug_image[..., 0] > 127
        agreement = (red == (aug_mask[..., 0] > 0)).mean()
        assert agreement > 0.99
        flipped_once |= bool(aug_mask[:, 40:].sum() > aug_mask[:, :24].sum())
        rotated_once |= bool(aug_mask.sum() != mask.sum())
    assert flipped_once and rotated_once


def test_dataset_batches_shapes_targets_and_reshuffles():
    images = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), np.uint8)
    masks = (np.random.default_rng(1).random((10, 32, 32, 1)) > 0.5).astype(np.uint8)
    ds = SegmentationDataset(images, masks, batch_size=4, output_names=("mask", "aux1", "aux2"), shuffle=True,
                             augment=True, seed=0)
    assert len(ds) == 3
    x, y = ds[0]
    assert x.dtype == np.float32 and x.shape == (4, 32, 32, 3) and x.max() > 1.0
    assert set(y) == {"mask", "aux1", "aux2"} and y["mask"].shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(y["mask"], y["aux2"])
    first = ds.order.copy()
    ds.on_epoch_end()
    assert sorted(ds.order) == list(range(10)) and not np.array_equal(first, ds.order)
    plain = SegmentationDataset(images, masks, batch_size=4)
    x, y = plain[2]
    assert x.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(x, images[8:].astype(np.float32))


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 16, 16, 3)).astype(np.uint8),
            (rng.random((n, 16, 16, 1)) > 0.5).astype(np.uint8))


def test_processes_yield_their_share_of_the_same_augmented_global_batch():
    from skinkeras.distribute import Placement

    images, masks = _images(10)
    common = dict(batch_size=4, output_names=("mask",), augment=True, shuffle=True, seed=3)
    one = SegmentationDataset(images, masks, **common).distribute(Placement("jax", 1), training=True)
    shares = [SegmentationDataset(images, masks, **common).distribute(
        Placement("jax", devices=2, num_processes=2, process_id=k), training=True) for k in (0, 1)]
    # 10 images in global batches of 4 on 2 devices: the last training batch is filled from the epoch's start.
    assert len(one) == 3 and [len(s) for s in shares] == [3, 3]
    for epoch in range(2):
        for index in range(3):
            x, y = one[index]
            parts = [s[index] for s in shares]
            assert [len(p[0]) for p in parts] == [2, 2]
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
            np.testing.assert_array_equal(np.concatenate([p[1]["mask"] for p in parts]), y["mask"])
        for dataset in (one, *shares):
            dataset.on_epoch_end()


def test_evaluation_is_padded_with_weight_zero_and_covers_every_sample_once():
    from skinkeras.distribute import Placement

    images, masks = _images(7)
    dataset = SegmentationDataset(images, masks, batch_size=3).distribute(Placement("jax", devices=2), training=False)
    assert dataset.batch_size == 4 and len(dataset) == 2 and dataset.real == 7
    batches = [dataset[i] for i in range(len(dataset))]
    assert [len(b[0]) for b in batches] == [4, 4]
    weights = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 1, 1, 0])
    seen = np.concatenate([b[0] for b in batches])[weights > 0]
    np.testing.assert_array_equal(seen, images)
    # One device: whole batches too (a short one would compile the test step again), the padding weighing 0.
    plain = SegmentationDataset(images, masks, batch_size=3).distribute(Placement("jax", 1), training=False)
    assert len(plain) == 3 and [len(plain[i][0]) for i in range(3)] == [3, 3, 3]
    np.testing.assert_array_equal(np.concatenate([plain[i][2] for i in range(3)]), [1] * 7 + [0, 0])
    # Training: whole batches without weights, the last one filled with the epoch's first samples, every
    # sample seen; the next epoch reshuffles (and fills with its own first samples).
    train = SegmentationDataset(images, masks, batch_size=3, shuffle=True, seed=1).distribute(Placement("jax", 1),
                                                                                             training=True)
    for _ in range(2):
        batches = [train[i] for i in range(len(train))]
        assert [len(b[0]) for b in batches] == [3, 3, 3] and {len(b) for b in batches} == {2}
        np.testing.assert_array_equal(train.order[7:], train.order[:2])
        assert sorted(train.order[:7]) == list(range(7))
        np.testing.assert_array_equal(batches[2][0], images[train.order[6:9]].astype(np.float32))
        train.on_epoch_end()


def test_a_training_batch_that_does_not_split_is_refused():
    from skinkeras.distribute import Placement

    images, masks = _images(8)
    with pytest.raises(ValueError, match="--batch-size 3 does not split over 2 devices"):
        SegmentationDataset(images, masks, batch_size=3).distribute(Placement("jax", devices=2), training=True)
    with pytest.raises(ValueError, match="fewer than one batch"):
        SegmentationDataset(images[:2], masks[:2], batch_size=4).distribute(Placement("jax", devices=2),
                                                                           training=True)
