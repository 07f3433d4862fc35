"""The `gradcam` command: CAMs of a classifier (and a baseline) on a split or a folder, measured against the lesion.

Writes into OUT: figure7.png (original | baseline CAM | TDBN CAM per branch,
paper Figure 7), overlays/ID_MODEL_BRANCH.png, cams.npz (the normalised maps
at input resolution, key "MODEL/ID/BRANCH" with MODEL "model" or "baseline"), per_image.csv, cam_metrics.json
(share of CAM mass inside the lesion and the pointing game, per model and
branch, with the mask source named) and skipped.csv.
"""

import os

import keras
import numpy as np
import pandas as pd
from PIL import Image

from skinkeras import runs
from skinkeras.classification.records import folder_records, split_subset
from skinkeras.config import ExplainConfig
from skinkeras.data.masks import mask_name, read_mask, resize_mask
from skinkeras.data.segdir import SegDir
from skinkeras.explain.gradcam import (
    cam_mass_in_mask,
    cam_targets,
    grad_cam,
    overlay,
    plot_cam_grid,
    pointing_game,
    upsample_cams,
)
from skinkeras.inference import cls_arrays, load_cls_run, load_model, model_image_size
from skinkeras.models.contract import CLASSIFICATION, ORIGINAL, SEGMENTED, contract_of

GT_MASK_SOURCE = "ground truth"
PREDICTED_MASK_SOURCE = "Deep-UNet prediction"


def class_index_of(name, classes):
    """Index of a class name (case-insensitive), or a ValueError listing the valid names.

    Args:
        name: class name.
        classes: the dataset's class names in label order.
    """
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    if str(name).lower() not in lookup:
        raise ValueError(f"Unknown --class {name!r}; valid: {', '.join(classes)}")
    return lookup[str(name).lower()]


def lesion_masks(df, cfg, masks=None, seg_dir=None):
    """Finds a lesion mask per record; returns (paths list with None where absent, source description).

    Order: `masks` (a folder of ID_segmentation.png, named by the user), the
    dataset's ground truth (HAM10000's lesion masks next to the data), the
    Deep-UNet masks that `segment` wrote into the SEGDIR.

    Args:
        df: records with image_id.
        cfg: the run's ClsTrainConfig (data_dir, seg_dir), or None.
        masks: mask folder given by the user.
        seg_dir: SEGDIR override.
    """
    from skinkeras.data.ham10000 import MASK_FOLDER

    candidates = []
    if masks:
        if not os.path.isdir(masks):
            raise FileNotFoundError(f"--masks folder not found: {masks}")
        candidates.append((masks, f"{GT_MASK_SOURCE} ({os.path.abspath(masks)})"))
    data_dir = getattr(cfg, "data_dir", None)
    if data_dir and os.path.isdir(os.path.join(data_dir, MASK_FOLDER)):
        candidates.append((os.path.join(data_dir, MASK_FOLDER), f"{GT_MASK_SOURCE} (HAM10000 lesion masks, "
                                                                  f"{os.path.join(data_dir, MASK_FOLDER)})"))
    seg = seg_dir or getattr(cfg, "seg_dir", None)
    if seg and os.path.isdir(SegDir(seg).masks_folder):
        folder = SegDir(seg).masks_folder
        candidates.append((folder, f"{PREDICTED_MASK_SOURCE} ({folder})"))
    for folder, source in candidates:
        paths = [os.path.join(folder, mask_name(i)) for i in df.image_id]
        found = [p if os.path.isfile(p) else None for p in paths]
        if any(found):
            return found, source
    return [None] * len(df), None


def _model_inputs(model_path, df, default_encoder, progress, model=None, cache=None, dataset=None):
    """Loads a classifier and the arrays it needs for `df`; returns (model, arrays, kept rows, skipped)."""
    from skinkeras.data.metadata import MetadataEncoder

    model = model or load_model(model_path, task=CLASSIFICATION)
    encoder_json = os.path.join(os.path.dirname(os.path.abspath(model_path)), "metadata_encoder.json")
    encoder = MetadataEncoder.from_dict(runs.read_json(encoder_json)) if os.path.isfile(encoder_json) else default_encoder
    names = contract_of(model).inputs
    if SEGMENTED in names and "seg_path" not in df:
        raise ValueError(f"{model_path} needs segmented images: pass --seg-dir SEGDIR written by `python cli.py segment`")
    arrays, kept, skipped = cls_arrays(df, encoder, model_image_size(model), names, progress, cache, dataset)
    return model, arrays, kept, skipped


def _mean(values):
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def gradcam_report(model_path, out, baseline_path=None, images=None, subset="test", n=16, layer=None,
                   class_name=None, masks=None, seg_dir=None, method="gradcam", batch_size=8, seed=0,
                   progress=True, cache=None):
    """Computes, renders and measures the CAMs of a classifier (and a baseline) on N images.

    Args:
        model_path: RUN/best.keras of `cls-train` (the TDBN, usually).
        out: output folder.
        baseline_path: another classifier's .keras (e.g. the DenseNet201 baseline), shown and measured beside it.
        images: an image folder instead of the run's split (no labels, no metadata).
        subset: split subset (train, val, test) when no folder is given.
        n: images to explain, a seeded sample; 0 = all.
        layer: target layer (default: each encoder's last block).
        class_name: explain this class for every image (default: each image's predicted class).
        masks: lesion-mask folder (ID_segmentation.png) for the measures.
        seg_dir: SEGDIR with segmented/ (and masks/) when it is not the run's.
        method: "gradcam" or "layercam".
        batch_size: images per gradient call.
        seed: seed of the image sample.
        progress: show progress bars.
        cache: input cache written by `prepare` (the images are read from it, not decoded; the lesion masks of the
            measures are still read from their files).

    Returns:
        the cam_metrics.json dict.
    """
    run = load_cls_run(model_path)
    cfg, classes, encoder = run.cfg, run.classes, run.encoder
    if images:
        df, problems, source = folder_records(images, seg_dir or cfg.seg_dir), [], f"all images of {images}"
    else:
        df, problems, source = split_subset(cfg, run.dir, run.needs_segmented, subset, seg_dir=seg_dir)
    if df.empty:
        raise ValueError(f"No images to explain in {source}")
    order = np.random.default_rng(seed).permutation(len(df))
    df = df.iloc[np.sort(order[:n]) if n else np.arange(len(df))].reset_index(drop=True)
    class_index = None if class_name is None else class_index_of(class_name, classes)

    labelled = {"model": model_path, **({"baseline": baseline_path} if baseline_path else {})}
    loaded, kept, skipped = {}, np.arange(len(df)), []
    for label, path in labelled.items():
        model, arrays, ok, bad = _model_inputs(path, df, encoder, progress, run.model if label == "model" else None,
                                               cache, None if images else cfg.dataset)
        loaded[label] = (model, arrays)
        kept = np.intersect1d(kept, ok)
        skipped += bad
    df = df.iloc[kept].reset_index(drop=True)
    first_arrays = loaded["model"][1]
    display_name = ORIGINAL if ORIGINAL in first_arrays else SEGMENTED
    display = first_arrays[display_name][kept]
    size = display.shape[1:3]

    mask_paths, mask_source = lesion_masks(df, cfg, masks, seg_dir)
    lesion = [(resize_mask(read_mask(p), size).astype(bool) if p else None) for p in mask_paths]

    os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    cams, per_image = {}, pd.DataFrame({"image_id": df.image_id, "label": [classes[i] if i >= 0 else "" for i in df.label]})
    summary = {}
    for label, (model, arrays) in loaded.items():
        subset_arrays = {k: v[kept] for k, v in arrays.items()}
        if progress:
            print(f"{method} of {label} ({model.name}) on {len(df)} images")
        result = grad_cam(model, subset_arrays, class_index, layer, batch_size, cam_targets(model, layer), method,
                          progress)
        per_image[f"{label}_predicted"] = [classes[i] for i in result.probabilities.argmax(axis=1)]
        per_image[f"{label}_explained"] = [classes[i] for i in result.class_index]
        summary[label] = {"path": os.path.abspath(labelled[label]), "name": model.name, "branches": {}}
        for target in result.targets:
            branch = target.branch
            maps = upsample_cams(result.raw[branch], size)
            cams[(label, branch)] = maps
            mass = [cam_mass_in_mask(c, m) if m is not None else np.nan for c, m in zip(maps, lesion)]
            point = [pointing_game(c, m) if m is not None else np.nan for c, m in zip(maps, lesion)]
            per_image[f"{label}_{branch}_mass_in_lesion"] = mass
            per_image[f"{label}_{branch}_pointing"] = point
            degenerate = result.degenerate[branch]
            summary[label]["branches"][branch] = {
                "layer": target.layer,
                "mass_in_lesion": _mean(mass),
                "pointing_game": _mean(point),
                "images_measured": int(np.sum(~np.isnan(mass))),
                "degenerate_maps": int(degenerate.sum()),
            }
            if degenerate.any():
                summary[label]["branches"][branch]["note"] = (
                    "Grad-CAM weights are round-off for this branch (its class score is invariant to a shift shared "
                    "by all positions, as for attention keys); its maps are zero; use --method layercam")
            for image_id, image, cam in zip(df.image_id, display, maps):
                Image.fromarray(overlay(image, cam)).save(os.path.join(out, "overlays", f"{image_id}_{label}_{branch}.png"))
    np.savez_compressed(os.path.join(out, "cams.npz"),
                        **{f"{label}/{image_id}/{branch}": maps[i]
                           for (label, branch), maps in cams.items() for i, image_id in enumerate(df.image_id)})
    per_image.to_csv(os.path.join(out, "per_image.csv"), index=False)

    columns = ["Original"] + [f"{summary[label]['name']}: {method} ({branch})" for label, branch in _figure_order(cams)]
    rows = []
    for i, image_id in enumerate(df.image_id):
        truth = per_image.label[i]
        explained = per_image["model_explained"][i]
        rows.append((f"{image_id}\ntrue {truth or '?'} / expl. {explained}",
                     [display[i]] + [overlay(display[i], cams[key][i]) for key in _figure_order(cams)]))
    plot_cam_grid(rows, columns, os.path.join(out, "figure7.png"))

    metrics = {
        "method": method,
        "class": class_name or "predicted",
        "source": source,
        "images": int(len(df)),
        "mask_source": mask_source,
        "images_with_mask": int(sum(m is not None for m in lesion)),
        "input_size": list(size),
        "models": summary,
        "backend": keras.backend.backend(),
    }
    runs.write_json(os.path.join(out, "cam_metrics.json"), metrics)
    runs.write_skipped(out, list(problems) + skipped)
    return metrics


def _figure_order(cams):
    """Baseline first, then the model's branches (original before segmented): the paper's column order."""
    return sorted(cams, key=lambda key: (key[0] != "baseline", key[1] != ORIGINAL))


def gradcam(cfg: ExplainConfig, progress=True):
    """The `gradcam` stage; returns the cam_metrics.json dict.

    Args:
        cfg: `ExplainConfig`.
        progress: show progress bars.
    """
    return gradcam_report(cfg.model, cfg.out, cfg.baseline, cfg.images, cfg.subset, cfg.n, cfg.layer, cfg.class_name,
                          cfg.masks, cfg.seg_dir, cfg.method, cfg.batch_size, cfg.seed, progress, cfg.cache)
