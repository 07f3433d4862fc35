"""The input cache (`prepare`, `--cache`): cached pixels equal decoded ones, a cached epoch trains like a decoded
one, and a cache that does not fit the run is refused with one line."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import cli
from skinkeras.data.cache import CacheError, CachedRows, ensure_cache, open_cache, prepare_cache

SIZE = 32


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_lines(result):
    """The CLI's error lines (stderr interleaves with the progress lines of stdout)."""
    return [line for line in result.output.splitlines() if line.startswith("Error: ")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic ISIC 2018 pairs and HAM10000 with a SEGDIR (original x ground-truth mask), and caches of both."""
    from skinkeras.data.ham10000 import ground_truth_segdir
    from skinkeras.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("cache")
    folders = make_synthetic(root / "syn", n=48, seed=3, image_size=(72, 56), datasets=("isic2018", "ham10000"))
    ham = folders["ham10000"]
    ground_truth_segdir(ham, root / "segdir")
    seg_cache = prepare_cache(root / "seg32", "isic2018", SIZE, data_dir=folders["isic2018"], progress=False)
    ham_cache = prepare_cache(root / "ham32", "ham10000", SIZE, data_dir=ham, seg_dir=root / "segdir", progress=False)
    return {"root": root, "isic2018": folders["isic2018"], "ham": ham, "segdir": root / "segdir",
            "seg_cache": seg_cache, "ham_cache": ham_cache}


def test_cached_pixels_equal_decoded_pixels(data):
    from skinkeras.data.ham10000 import load_ham10000
    from skinkeras.data.isic2018 import find_pairs
    from skinkeras.data.pipeline import load_image_rows, load_pairs
    from skinkeras.data.segdir import SegDir

    pairs, _ = find_pairs(data["isic2018"])
    images, masks, kept, _ = load_pairs(pairs, (SIZE, SIZE), progress=False)
    selection = data["seg_cache"].check("isic2018", SIZE, [p.image_id for p in kept],
                                        {"images": [p.image_path for p in kept], "masks": [p.mask_path for p in kept]})
    assert selection.ok.all()
    np.testing.assert_array_equal(selection.view("images")[np.arange(len(kept))], images)
    np.testing.assert_array_equal(np.asarray(selection.view("masks")), masks)

    df, _ = load_ham10000(data["ham"])
    seg_paths = [SegDir(data["segdir"]).segmented_path(i) for i in df.image_id]
    originals, ok, _ = load_image_rows(list(df.image_path), (SIZE, SIZE), progress=False)
    segmented, ok_seg, _ = load_image_rows(seg_paths, (SIZE, SIZE), progress=False)
    assert len(ok) == len(ok_seg) == len(df)
    selection = data["ham_cache"].check("ham10000", SIZE, df.image_id,
                                        {"images": list(df.image_path), "segmented": seg_paths})
    # Shuffled positions: a batch's rows come back in the batch's order.
    order = np.random.default_rng(0).permutation(len(df))
    np.testing.assert_array_equal(selection.view("images")[order], originals[order])
    np.testing.assert_array_equal(selection.view("segmented")[order], segmented[order])
    assert isinstance(selection.view("images"), CachedRows)
    assert isinstance(data["ham_cache"].arrays["images"], np.memmap)


def test_cls_train_from_the_cache_matches_the_jpeg_path(data):
    runs = data["root"] / "runs"
    common = ["cls-train", "--data-dir", data["ham"], "--variant", "original_only", "--encoder", "mobilenetv2",
              "--weights", "none", "--image-size", SIZE, "--batch-size", 8, "--epochs", 1, "--seed", 5]
    jpeg = run_cli(*common, "--out", runs / "jpeg")
    assert jpeg.exit_code == 0, jpeg.output
    cached = run_cli(*common, "--cache", data["ham_cache"].path, "--out", runs / "cached")
    assert cached.exit_code == 0, cached.output
    a, b = (pd.read_csv(runs / name / "history.csv") for name in ("jpeg", "cached"))
    assert "loss" in a and len(a) == 1
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=0, atol=1e-6)
    assert pd.read_csv(runs / "jpeg" / "split.csv").equals(pd.read_csv(runs / "cached" / "split.csv"))


def test_a_copied_cache_alone_trains_the_same_run(data):
    """Only the cache where the run happens (the sources absent): its own records (ids, labels, metadata) and
    segmented images give the same split and the same TDBN losses as with the sources present."""
    copy = data["root"] / "ham_moved"
    segdir = data["root"] / "segdir_moved"
    shutil.copytree(data["ham"], copy)
    shutil.copytree(data["segdir"], segdir)
    cache = prepare_cache(data["root"] / "moved32", "ham10000", SIZE, data_dir=copy, seg_dir=segdir, progress=False)
    runs = data["root"] / "runs"
    common = ["cls-train", "--data-dir", copy, "--seg-dir", segdir, "--variant", "tdbn", "--encoder", "mobilenetv2",
              "--weights", "none", "--image-size", SIZE, "--batch-size", 8, "--epochs", 1, "--seed", 5,
              "--cache", cache.path]
    present = run_cli(*common, "--out", runs / "present")
    assert present.exit_code == 0, present.output
    assert "trusting the records" not in present.output
    shutil.rmtree(copy)
    shutil.rmtree(segdir)
    alone = run_cli(*common, "--out", runs / "alone")
    assert alone.exit_code == 0, alone.output
    (line,) = [line for line in alone.output.splitlines() if "trusting the records" in line]
    assert cache.path in line and f"{len(cache)} images" in line
    a, b = (pd.read_csv(runs / name / "history.csv") for name in ("present", "alone"))
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=0, atol=1e-6)
    assert pd.read_csv(runs / "present" / "split.csv").equals(pd.read_csv(runs / "alone" / "split.csv"))
    records = cache.records(segmented=True)
    assert {"age", "sex", "site", "dx", "lesion_id", "seg_path"} <= set(records.columns)
    assert records.age.notna().any() and (records.sex != "").any()
    # A cache prepared before caches kept their records cannot stand in for absent sources: one line says so.
    old = data["root"] / "old32"
    shutil.copytree(cache.path, old)
    ids = pd.read_csv(old / "ids.csv", dtype={"image_id": str}, keep_default_na=False)
    ids.drop(columns=["age", "sex", "site"]).to_csv(old / "ids.csv", index=False)
    with pytest.raises(CacheError, match="prepared before caches kept their records"):
        open_cache(old).records()


def test_a_cache_that_does_not_fit_the_run_is_refused(data):
    cache = data["ham_cache"]
    with pytest.raises(CacheError, match=r"prepared at 32 px, this run uses 64: run `prepare --image-size 64` "
                                         r"or drop --cache"):
        cache.check("ham10000", 64)
    with pytest.raises(CacheError, match=r"prepared for ham10000, this run reads isic2019"):
        cache.check("isic2019", SIZE)
    with pytest.raises(CacheError, match="not in it"):
        cache.check("ham10000", SIZE, ["ISIC_9999999"], {"images": ["/nowhere/ISIC_9999999.jpg"]})
    first = cache.ids.iloc[0]
    with pytest.raises(CacheError, match="made from other files"):
        cache.check("ham10000", SIZE, [first.image_id], {"images": ["/elsewhere/x.jpg"]})
    with pytest.raises(CacheError, match="holds no masks"):
        cache.check("ham10000", SIZE, [first.image_id], {"masks": [first.image_path]})

    # A source file rewritten since prepare: the command refuses the cache in one line naming it and the fix.
    copy = data["root"] / "ham_copy"
    shutil.copytree(data["ham"], copy)
    cached = prepare_cache(data["root"] / "copy32", "ham10000", SIZE, data_dir=copy, progress=False)
    changed = cached.ids.image_path.iloc[0]
    os.utime(changed, ns=(0, 0))
    result = run_cli("cls-train", "--data-dir", copy, "--variant", "original_only", "--encoder", "mobilenetv2",
                     "--weights", "none", "--image-size", SIZE, "--epochs", 1, "--cache", cached.path,
                     "--out", data["root"] / "runs" / "refused")
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), repr(result.exception)
    (error,) = error_lines(result)
    assert cached.path in error and changed in error and "drop --cache" in error
    # The run's dataset against the cache's, through the CLI: an isic2018 cache for a HAM10000 run.
    result = run_cli("cls-train", "--data-dir", data["ham"], "--variant", "original_only", "--encoder",
                     "mobilenetv2", "--weights", "none", "--image-size", SIZE, "--epochs", 1,
                     "--cache", data["seg_cache"].path, "--out", data["root"] / "runs" / "refused2")
    assert result.exit_code != 0 and "prepared for isic2018, this run reads ham10000" in result.output


def test_an_incomplete_cache_is_refused(data, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(data["seg_cache"].path, partial)
    os.remove(partial / "manifest.json")  # what an interrupted prepare leaves
    with pytest.raises(CacheError, match="incomplete cache"):
        open_cache(partial)
    result = run_cli("seg-train", "--data-dir", data["isic2018"], "--encoder", "efficientnetb0", "--weights", "none",
                     "--image-size", SIZE, "--epochs", 1, "--cache", partial, "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert error_lines(result)[0].startswith(f"Error: {partial}: incomplete cache")


def test_prepare_writes_arrays_and_the_manifest(data, tmp_path):
    out = tmp_path / "c"
    result = run_cli("prepare", "--dataset", "isic2018", "--data-dir", data["isic2018"], "--image-size", SIZE,
                     "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "isic2018" and manifest["image_size"] == SIZE and manifest["format_version"] == 1
    assert "resize_rgb" in manifest["resize_method"] and len(manifest["files_sha256"]) == 64
    assert manifest["arrays"] == {"images": [48, SIZE, SIZE, 3], "masks": [48, SIZE, SIZE, 1]}
    ids = pd.read_csv(out / "ids.csv")
    assert {"image_id", "image_path", "image_bytes", "image_mtime_ns", "mask_path"} <= set(ids.columns)
    masks = np.load(out / "masks.npy", mmap_mode="r")
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    # A folder that is not a cache is not overwritten.
    result = run_cli("prepare", "--dataset", "isic2018", "--data-dir", data["isic2018"], "--image-size", SIZE,
                     "--out", data["isic2018"])
    assert result.exit_code != 0 and "not a cache" in result.output


def test_ensure_cache_reuses_a_fitting_cache_and_prepares_again_when_a_file_changes(data, tmp_path):
    copy = tmp_path / "ham"
    shutil.copytree(data["ham"], copy)
    out = tmp_path / "c"
    cache, made = ensure_cache(out, "ham10000", SIZE, data_dir=copy, progress=False)
    assert made and len(cache) == 48 and set(cache.arrays) == {"images"}
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again, made = ensure_cache(out, "ham10000", SIZE, data_dir=copy, progress=False)
    assert not made and (out / "manifest.json").stat().st_mtime_ns == stamp
    # A source file rewritten since: prepared again, and the new pixels are the file's.
    from PIL import Image

    changed = cache.ids.image_path.iloc[3]
    Image.new("RGB", (72, 56), (200, 10, 10)).save(changed, quality=95)
    fresh, made = ensure_cache(out, "ham10000", SIZE, data_dir=copy, progress=False)
    assert made
    row = fresh.check("ham10000", SIZE, [fresh.ids.image_id.iloc[3]], {"images": [changed]}).view("images")[0]
    assert abs(int(row[..., 0].mean()) - 200) <= 3 and int(row[..., 2].mean()) <= 13
    # Another size, or the segmented images beside the originals: another cache, prepared in its place.
    _, made = ensure_cache(out, "ham10000", SIZE + 8, data_dir=copy, progress=False)
    assert made and open_cache(out).image_size == SIZE + 8
    # A folder that is not a cache is never overwritten.
    with pytest.raises(FileExistsError, match="not a cache"):
        ensure_cache(copy, "ham10000", SIZE, data_dir=copy, progress=False)
