"""`segment`: the predicted masks and segmented images (paper Figure 2) that feed the classifier."""

import functools
import os

from skinkeras import distribute, runs
from skinkeras.config import SegmentConfig
from skinkeras.data.isic2018 import list_images
from skinkeras.data.segdir import SegDir
from skinkeras.data.sets import segmentation_pairs
from skinkeras.inference import load_model, predict_original_size
from skinkeras.models.contract import SEGMENTATION


def segment_folder(model_path, images, out, batch_size=8, progress=True, load=None):
    """Writes predicted masks and segmented images for a whole folder, skipping what is already there.

    Layout: see `skinkeras.data.segdir` (OUT/masks/ID_segmentation.png and
    OUT/segmented/ID.jpg); the classification stage reads it back.

    Args:
        model_path: `.keras` segmentation model.
        images: image folder.
        out: output folder (SEGDIR).
        batch_size: prediction batch size.
        progress: show a progress bar.
        load: () -> the model, called only when something is left to do (default: load `model_path`).
    """
    files = list_images(images)
    if not files:
        raise ValueError(f"No images in {images}")
    items = [(os.path.splitext(os.path.basename(p))[0], p) for p in files]
    return segment_items(model_path, items, os.path.abspath(images), out, batch_size, progress, load)


def segment_items(model_path, items, source, out, batch_size=8, progress=True, load=None):
    """Writes predicted masks and segmented images of (image id, path) items, skipping what is already there.

    Args:
        model_path: `.keras` segmentation model.
        items: [(image_id, image path)].
        source: where the items come from, for segment.json.
        out: output folder (SEGDIR).
        batch_size: prediction batch size.
        progress: show a progress bar.
        load: () -> the model, called only when something is left to do (default: load `model_path`).
    """
    layout = SegDir(out).create()
    todo = [(i, p) for i, p in items if not layout.has(i)]
    if progress:
        print(f"{len(items) - len(todo)} of {len(items)} images already segmented in {out}; {len(todo)} to do")
    written = []

    def save(image_id, image, mask):
        layout.write(image_id, image, mask)
        written.append(image_id)

    skipped = []
    if todo:
        model = load() if load else load_model(model_path, task=SEGMENTATION)
        skipped = predict_original_size(model, todo, batch_size, progress, save)
    runs.write_skipped(out, skipped)
    report = {"images": len(items), "written": len(written), "already_there": len(items) - len(todo),
              "skipped": len(skipped), "model": os.path.abspath(model_path), "source": source}
    runs.write_json(os.path.join(out, "segment.json"), report)
    return report


def segment(cfg: SegmentConfig, progress=True):
    """The `segment` stage over every folder of `cfg.images` (and the images of `cfg.dataset`), loading the
    model once; one report per source.

    Args:
        cfg: `SegmentConfig`.
        progress: show progress bars.
    """
    distribute.configure(cfg.devices)
    load = functools.cache(lambda: load_model(cfg.model, task=SEGMENTATION, precision=cfg.precision))
    reports = [segment_folder(cfg.model, folder, cfg.out, cfg.batch_size, progress, load) for folder in cfg.images]
    if cfg.dataset:
        # The set's official image list, as seg-eval and cls-eval read it (an image the reader leaves out is listed
        # in their skipped.csv).
        pairs, _ = segmentation_pairs(cfg.dataset, cfg.data_dir, subset=cfg.subset)
        items = [(p.image_id, p.image_path) for p in pairs]
        reports.append(segment_items(cfg.model, items, f"{cfg.dataset} in {os.path.abspath(cfg.data_dir)}", cfg.out,
                                     cfg.batch_size, progress, load))
    return reports
