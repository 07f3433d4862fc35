"""Input cache: every image, mask and segmented image decoded and resized once, read back as memory maps.

    CACHE/images.npy      uint8 (N, S, S, 3)   originals (`load_rgb` / `load_pair`, as the JPEG path)
    CACHE/masks.npy       uint8 (N, S, S, 1)   lesion masks, 0/1 (segmentation sets)
    CACHE/segmented.npy   uint8 (N, S, S, 3)   SEGDIR segmented images (classification, with a SEGDIR)
    CACHE/ids.csv         one row per array row: id, label (classification: the whole record, metadata included),
                          and per source file its path, size and mtime
    CACHE/manifest.json   dataset, image size, resize method, format version, hash of the file list

`prepare_cache` writes it; `open_cache` reads it and `InputCache.check` refuses it (one line naming the cache and
the fix) when a run would read other files, at another size or of another dataset. The manifest is written last,
so a cache without one is an interrupted prepare and is refused.

A classification cache also works where only the cache was copied (a cluster node's local disk): when none of a
view's source files exists, the run trusts the cache's own records (ids, labels, metadata) and says so; when they
exist and changed, it refuses as above.
"""

import contextlib
import hashlib
import json
import os

import numpy as np
import pandas as pd

from skinkeras.data.segdir import MASKS_DIR
from skinkeras.names import SEGMENTED

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IDS_CSV = "ids.csv"
# The sets `prepare` reads (the external PH2 / ISIC 2017 sets of `skinkeras.data.sets` are not cached).
CACHED_SEGMENTATION_SETS = ("isic2018",)
CACHED_CLASSIFICATION_SETS = ("ham10000", "isic2019")
DATASETS = CACHED_SEGMENTATION_SETS + CACHED_CLASSIFICATION_SETS
RESIZE_METHOD = ("images: skinkeras.data.pipeline.resize_rgb (PIL bilinear, uint8 RGB); "
                 "masks: skinkeras.data.masks.resize_mask (nearest, > 128 binarised)")
# Array names: the segmented images' and masks' are the names they have everywhere else (skinkeras.names, SEGDIR).
IMAGES, MASKS, SEGMENTED_IMAGES = "images", MASKS_DIR, SEGMENTED
# Array name -> (ids.csv column prefix, channels).
VIEWS = {IMAGES: ("image", 3), MASKS: ("mask", 1), SEGMENTED_IMAGES: (SEGMENTED, 3)}
# Rows decoded per batch of threads: bounds what prepare holds in memory besides the memory maps.
CHUNK = 256
_OWN_FILES = {MANIFEST, IDS_CSV, MANIFEST + ".tmp"} | {f"{name}.npy" for name in VIEWS}


class CacheError(ValueError):
    """A cache that cannot serve this run; the message is one line naming the cache and the fix."""


def file_entry(path):
    """(absolute path, size in bytes, mtime in ns) of a source file: what identifies it in a cache.

    Args:
        path: an existing file.
    """
    stat = os.stat(path)
    return os.path.abspath(path), int(stat.st_size), int(stat.st_mtime_ns)


def files_hash(ids):
    """sha256 of the source file list (paths, sizes, mtimes) held in an ids table.

    Args:
        ids: the cache's ids DataFrame.
    """
    digest = hashlib.sha256()
    for prefix, _ in VIEWS.values():
        if f"{prefix}_path" not in ids:
            continue
        for row in zip(ids[f"{prefix}_path"], ids[f"{prefix}_bytes"], ids[f"{prefix}_mtime_ns"]):
            digest.update(json.dumps([str(row[0]), int(row[1]), int(row[2])]).encode())
    return digest.hexdigest()


class CachedRows:
    """Rows of a memory-mapped array, read only when indexed: a batch costs its own rows, not the whole array.

    Indexing with a position list returns a plain uint8 array of those rows (what the PyDatasets take);
    iteration yields one row at a time.

    Args:
        array: the memory map (N, H, W, C).
        rows: positions into it, one per sample of this view.
    """

    def __init__(self, array, rows):
        self.array = array
        self.rows = np.asarray(rows, np.int64)

    @property
    def shape(self):
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self):
        return self.array.dtype

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return np.asarray(self.array[int(rows)])
        # Reading in ascending row order keeps the page-cache access sequential; the batch order is restored.
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        out[order] = self.array[rows[order]]
        return out

    def __iter__(self):
        for row in self.rows:
            yield np.asarray(self.array[int(row)])

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self.rows))]
        return out if dtype is None else out.astype(dtype)


class Selection:
    """The cache rows of the samples a run reads.

    Args:
        cache: the `InputCache`.
        rows: cache row of each sample.
        ok: whether every view asked for decoded at prepare time.
        skipped: [(path, reason)] of the samples whose file did not decode.
    """

    def __init__(self, cache, rows, ok, skipped):
        self.cache, self.rows, self.ok, self.skipped = cache, rows, ok, skipped

    def view(self, name, positions=None):
        """`CachedRows` of array `name` for the samples at `positions` (default: all).

        Args:
            name: images, masks or segmented.
            positions: sample positions (into the ids given to `check`).
        """
        rows = self.rows if positions is None else self.rows[np.asarray(positions, np.int64)]
        return CachedRows(self.cache.arrays[name], rows)


class InputCache:
    """An opened cache (see `open_cache`).

    Args:
        path: the cache folder.
        manifest: its manifest dict.
        ids: its ids DataFrame (one row per array row).
        arrays: dict name -> read-only memory map.
    """

    def __init__(self, path, manifest, ids, arrays):
        self.path, self.manifest, self.ids, self.arrays = path, manifest, ids, arrays
        self._row_of = {i: r for r, i in enumerate(ids["image_id"])}

    @property
    def dataset(self):
        return self.manifest["dataset"]

    @property
    def image_size(self):
        return int(self.manifest["image_size"])

    def __len__(self):
        return len(self.ids)

    def _refuse(self, problem, fix):
        raise CacheError(f"{self.path}: {problem}: {fix} or drop --cache")

    def records(self, segmented=False):
        """The classification records the cache was prepared from, for a run whose source files are absent.

        Args:
            segmented: add `seg_path` (the run reads segmented images; the cache must hold them).

        Returns:
            records DataFrame (image_id, image_path, lesion_id, label, dx, age, sex, site, ...), as the dataset
            reader gave them when the cache was prepared.

        Raises:
            CacheError: a segmentation cache, one without segmented images when they are asked for, or one
                prepared before caches kept their records.
        """
        from skinkeras.data.classification import finish_records

        if self.dataset not in CACHED_CLASSIFICATION_SETS:
            self._refuse(f"a {self.dataset} cache holds no classification records", "give the dataset folder")
        missing = [c for c in ("label", "age", "sex", "site") if c not in self.ids]
        if missing:
            self._refuse(f"prepared before caches kept their records (no {missing[0]} column), and the source "
                         "files are absent", f"prepare it again where they are (`python cli.py prepare ... "
                         f"--out {self.path}`)")
        if segmented and SEGMENTED_IMAGES not in self.arrays:
            self._refuse("it holds no segmented images", "prepare it with --seg-dir SEGDIR")
        generated = {f"{prefix}_{field}" for prefix, _ in VIEWS.values()
                     for field in ("path", "bytes", "mtime_ns", "ok", "error")}
        own = [c for c in self.ids.columns if c not in generated]
        df = self.ids[own].copy()
        df["image_path"] = self.ids["image_path"]
        if segmented:
            df["seg_path"] = self.ids[f"{VIEWS[SEGMENTED_IMAGES][0]}_path"]
        return finish_records(df)

    def check(self, dataset=None, image_size=None, ids=None, paths=None):
        """Refuses (one line) a cache that does not hold what a run would read; returns the run's `Selection`.

        Args:
            dataset: the run's dataset (None: not checked).
            image_size: the run's input size in px (None: not checked).
            ids: the image ids the run reads.
            paths: dict array name -> the file path the run would decode for each id (same order as `ids`).

        Raises:
            CacheError: another dataset or size, a missing array, or files the cache was not made from (another
                path, or a file changed since: size or mtime). A view none of whose files exists is not compared
                (only the cache was copied; see the module docstring).
        """
        redo = f"run `python cli.py prepare --dataset {dataset or self.dataset} ... --image-size " \
               f"{image_size or self.image_size} --out {self.path}`"
        if dataset is not None and dataset != self.dataset:
            self._refuse(f"prepared for {self.dataset}, this run reads {dataset}", redo)
        if image_size is not None and int(image_size) != self.image_size:
            self._refuse(f"prepared at {self.image_size} px, this run uses {image_size}",
                         f"run `prepare --image-size {image_size}`")
        ids = [] if ids is None else [str(i) for i in ids]
        rows = np.array([self._row_of.get(i, -1) for i in ids], np.int64)
        if (rows < 0).any():
            first = ids[int(np.flatnonzero(rows < 0)[0])]
            src = self.manifest["sources"]
            made = ", ".join(f"{k} {v}" for k, v in src.items() if v)
            self._refuse(f"{int((rows < 0).sum())} of the {len(ids)} images this run reads are not in it "
                         f"(e.g. {first}; it holds {made})", f"{redo} on the folders this run reads")
        ok = np.ones(len(ids), bool)
        skipped = []
        for name, wanted in (paths or {}).items():
            prefix = VIEWS[name][0]
            if name not in self.arrays:
                option = "--seg-dir SEGDIR" if name == SEGMENTED_IMAGES else "a dataset with masks"
                self._refuse(f"it holds no {name}", f"{redo} with {option}")
            stored = self.ids.iloc[rows]
            # Only the cache was copied: none of the view's files exists, so there is nothing to compare with.
            absent = not any(p is not None and os.path.exists(p) for p in wanted)
            for path, (s_path, s_bytes, s_mtime) in zip(wanted, zip(stored[f"{prefix}_path"],
                                                                    stored[f"{prefix}_bytes"],
                                                                    stored[f"{prefix}_mtime_ns"])):
                if path is None or os.path.abspath(path) != s_path:
                    self._refuse(f"made from other files ({s_path}, this run reads {path})", redo)
                if absent:
                    continue
                try:
                    entry = file_entry(path)
                except OSError:
                    entry = None
                if entry != (s_path, int(s_bytes), int(s_mtime)):
                    self._refuse(f"{path} changed since the cache was prepared (size or mtime)", redo)
            good = stored[f"{prefix}_ok"].to_numpy(bool)
            skipped += [(p, e) for p, e, g in zip(wanted, stored[f"{prefix}_error"], good) if not g]
            ok &= good
        return Selection(self, rows, ok, skipped)


def open_cache(path):
    """Opens a cache written by `prepare_cache`; its arrays are read-only memory maps (nothing is loaded).

    Args:
        path: the cache folder.

    Raises:
        CacheError: no cache there, an incomplete one (no manifest: an interrupted prepare), another format
            version, or an ids.csv that does not match its manifest.
    """
    if isinstance(path, InputCache):
        return path
    path = os.fspath(path)
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise CacheError(f"{path}: no such cache; make it with `python cli.py prepare ... --out {path}`")
    if not os.path.isfile(manifest_path):
        raise CacheError(f"{path}: incomplete cache (no {MANIFEST}, an interrupted prepare?); run "
                         f"`python cli.py prepare ... --out {path}` again or drop --cache")
    with open(manifest_path) as f:
        manifest = json.load(f)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{path}: cache format {manifest.get('format_version')}, this version reads "
                         f"{FORMAT_VERSION}; run `python cli.py prepare ... --out {path}` again or drop --cache")
    ids = pd.read_csv(os.path.join(path, IDS_CSV), dtype={"image_id": str}, keep_default_na=False)
    if len(ids) != manifest["count"] or files_hash(ids) != manifest["files_sha256"]:
        raise CacheError(f"{path}: {IDS_CSV} does not match {MANIFEST}; run `python cli.py prepare ... "
                         f"--out {path}` again or drop --cache")
    arrays = {}
    for name in manifest["arrays"]:
        arrays[name] = np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r")
        if arrays[name].shape[0] != len(ids):
            raise CacheError(f"{path}: {name}.npy has {arrays[name].shape[0]} rows, {IDS_CSV} {len(ids)}; run "
                             f"`python cli.py prepare ... --out {path}` again or drop --cache")
    return InputCache(path, manifest, ids, arrays)


def _sources(dataset, data_dir, images, masks, seg_dir, subset):
    """The records to cache: (ids DataFrame with image_id [, label, dx, lesion_id], dict view -> paths, problems)."""
    from skinkeras.data.classification import as_folder_list

    folders = as_folder_list(images)
    if dataset in CACHED_SEGMENTATION_SETS:
        from skinkeras.data.isic2018 import find_pairs

        if len(folders) > 1:
            raise ValueError(f"--dataset {dataset} reads one --images folder (got {len(folders)})")
        pairs, problems = find_pairs(data_dir, folders[0] if folders else None, masks, subset)
        ids = pd.DataFrame({"image_id": [p.image_id for p in pairs]})
        return ids, {IMAGES: [p.image_path for p in pairs], MASKS: [p.mask_path for p in pairs]}, problems
    if dataset not in CACHED_CLASSIFICATION_SETS:
        raise ValueError(f"Unknown --dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    from skinkeras.data import ham10000, isic2019
    from skinkeras.data.segdir import SegDir

    load = {"ham10000": ham10000.load_ham10000, "isic2019": isic2019.load_isic2019}[dataset]
    df, problems = load(data_dir, folders or None)
    if df.empty:
        raise ValueError(f"No usable {dataset} records in {data_dir or folders}; check its metadata CSV")
    views = {IMAGES: list(df["image_path"])}
    if seg_dir:
        views[SEGMENTED_IMAGES] = [SegDir(seg_dir).segmented_path(i) for i in df["image_id"]]
    # The whole record (metadata too), so a run can start from the cache alone (`InputCache.records`).
    return df[[c for c in df.columns if c not in ("image_path", "seg_path")]].copy(), views, problems


def _refuse_foreign(out):
    foreign = sorted(set(os.listdir(out)) - _OWN_FILES) if os.path.isdir(out) else []
    if foreign:
        raise FileExistsError(f"{out} holds other files ({foreign[0]}, ...), not a cache; choose a new --out")


def _empty_folder_for(out):
    if os.path.isdir(out):
        _refuse_foreign(out)
        # Dropping the old manifest first: if this prepare is interrupted, the folder reads as incomplete.
        for name in (MANIFEST, MANIFEST + ".tmp"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    os.makedirs(out, exist_ok=True)


def prepare_cache(out, dataset, image_size, data_dir=None, images=None, masks=None, seg_dir=None, subset="train",
                  progress=True, workers=2, listed=None):
    """Decodes and resizes every input of a dataset once into memory-mapped arrays; returns the `InputCache`.

    The decode is the JPEG path's own (`load_pair` for image/mask pairs, `load_rgb` for classifier images), so
    cached pixels equal decoded ones. Arrays are written row by row into `np.lib.format.open_memmap` files, so
    memory stays flat; a file that does not decode keeps a zero row, flagged in ids.csv (`*_ok`, `*_error`) and
    skipped by the runs as the JPEG path would skip it.

    Args:
        out: cache folder (new, or an earlier cache, which is replaced).
        dataset: isic2018 (image/mask pairs: --data-dir or --images/--masks), ham10000 or isic2019.
        image_size: square size in px.
        data_dir: the dataset folder in its official layout.
        images: image folder(s) instead of the official ones.
        masks: mask folder (isic2018 with images).
        seg_dir: SEGDIR written by `segment` (classification): also caches its segmented images.
        subset: official subset of an isic2018 data_dir: train, val or test.
        progress: show a progress bar.
        workers: decoding threads.
        listed: (ids, views, problems) of these sources when the caller has already listed them (`ensure_cache`).
    """
    import keras

    from skinkeras.data.pipeline import load_all, load_pair, load_rgb
    from skinkeras.data.isic2018 import Pair

    out = os.fspath(out)
    size = (int(image_size), int(image_size))
    if size[0] < 32:
        raise ValueError(f"--image-size must be at least 32 px (got {image_size})")
    ids, views, problems = listed or _sources(dataset, data_dir, images, masks, seg_dir, subset)
    _empty_folder_for(out)
    n = len(ids)
    arrays = {name: np.lib.format.open_memmap(os.path.join(out, f"{name}.npy"), mode="w+", dtype=np.uint8,
                                              shape=(n, *size, VIEWS[name][1])) for name in views}
    table = ids.reset_index(drop=True)
    for name, paths in views.items():
        prefix = VIEWS[name][0]
        entries = [file_entry(p) if p and os.path.isfile(p) else (os.path.abspath(p), -1, -1) for p in paths]
        table[f"{prefix}_path"] = [e[0] for e in entries]
        table[f"{prefix}_bytes"] = [e[1] for e in entries]
        table[f"{prefix}_mtime_ns"] = [e[2] for e in entries]
        table[f"{prefix}_ok"] = False
        table[f"{prefix}_error"] = ""
    bar = keras.utils.Progbar(n, unit_name="image") if progress and n else None
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        positions = range(start, stop)
        if MASKS in views:
            # Image and mask decode together: a pair is usable only whole, as in `load_pairs`.
            pairs = [Pair(str(ids.image_id.iloc[i]), views[IMAGES][i], views[MASKS][i]) for i in positions]
            results, kept, failed = load_all(pairs, lambda p: load_pair(p, size), lambda p: p.image_path, False,
                                             workers)
            for (image, mask), k in zip(results, kept):
                arrays[IMAGES][start + k], arrays[MASKS][start + k] = image, mask
            okay = np.zeros(len(pairs), bool)
            okay[kept] = True
            reasons = dict(failed)
            for name in (IMAGES, MASKS):
                table.loc[start:stop - 1, f"{VIEWS[name][0]}_ok"] = okay
                table.loc[start:stop - 1, f"{VIEWS[name][0]}_error"] = [reasons.get(p.image_path, "") for p in pairs]
        else:
            for name, paths in views.items():
                prefix = VIEWS[name][0]
                chunk = [paths[i] for i in positions]
                results, kept, failed = load_all(chunk, lambda p: load_rgb(p, size), str, False, workers)
                for image, k in zip(results, kept):
                    arrays[name][start + k] = image
                okay = np.zeros(len(chunk), bool)
                okay[kept] = True
                table.loc[start:stop - 1, f"{prefix}_ok"] = okay
                reasons = dict(failed)
                table.loc[start:stop - 1, f"{prefix}_error"] = [reasons.get(p, "") for p in chunk]
        if bar is not None:
            bar.update(stop)
    for array in arrays.values():
        array.flush()
    del arrays
    table.to_csv(os.path.join(out, IDS_CSV), index=False)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "image_size": size[0],
        "resize_method": RESIZE_METHOD,
        "count": n,
        "arrays": {name: [n, *size, VIEWS[name][1]] for name in views},
        "sources": {"data_dir": data_dir and os.path.abspath(data_dir),
                    IMAGES: [os.path.abspath(f) for f in (images if isinstance(images, (list, tuple))
                                                            else [images] if images else [])],
                    MASKS: masks and os.path.abspath(masks), "seg_dir": seg_dir and os.path.abspath(seg_dir),
                    "subset": subset if dataset in CACHED_SEGMENTATION_SETS else None},
        "files": int(sum(len(p) for p in views.values())),
        "files_sha256": files_hash(pd.read_csv(os.path.join(out, IDS_CSV), dtype={"image_id": str},
                                               keep_default_na=False)),
        "not_decoded": {VIEWS[name][0]: int((~table[f"{VIEWS[name][0]}_ok"].astype(bool)).sum()) for name in views},
        "left_out": [list(p) for p in problems],
    }
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, os.path.join(out, MANIFEST))  # last: its presence means every array row was written
    return open_cache(out)


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on `path` (a file beside the cache) where the platform has `fcntl`."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; two runs must not prepare the same folder at once
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _holds(cache, dataset, image_size, ids, views):
    """Whether `cache` holds exactly these images (same ids, files, sizes and mtimes), views and size."""
    if set(cache.arrays) != set(views) or len(cache) != len(ids):
        return False
    try:
        cache.check(dataset, image_size, list(ids["image_id"]), views)
    except CacheError:
        return False
    return True


def ensure_cache(out, dataset, image_size, data_dir=None, images=None, masks=None, seg_dir=None, subset="train",
                 progress=True, workers=2):
    """The cache at `out` when it holds exactly these inputs at this size, else one prepared there anew.

    What `reproduce` calls for every row: the first row decodes the set once, later rows and resumed runs reuse
    it, and a source file changed since (size or mtime), another file list or another size makes it prepare
    again instead of refusing. Two processes asking for the same folder at once take turns (a lock file beside
    it), so the second one reuses what the first prepared.

    Args:
        out: cache folder (absent, an earlier cache, or an incomplete one).
        dataset, image_size, data_dir, images, masks, seg_dir, subset, progress, workers: as `prepare_cache`.

    Returns:
        (`InputCache`, whether it was prepared by this call).
    """
    out = os.fspath(out)
    _refuse_foreign(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with _locked(out + ".lock"):
        listed = _sources(dataset, data_dir, images, masks, seg_dir, subset)
        ids, views, _ = listed
        if os.path.isfile(os.path.join(out, MANIFEST)):
            try:
                cache = open_cache(out)
            except CacheError:
                cache = None
            if cache is not None and _holds(cache, dataset, image_size, ids, views):
                return cache, False
        return prepare_cache(out, dataset, image_size, data_dir, images, masks, seg_dir, subset, progress,
                             workers, listed), True
