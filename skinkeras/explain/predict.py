"""The whole pipeline on one dermoscopic image: Deep-UNet mask -> segmented image -> classifier -> CAM."""

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from skinkeras import runs
from skinkeras.config import PredictConfig
from skinkeras.models.contract import ORIGINAL, SEGMENTATION, SEGMENTED


@dataclass
class Explained:
    """One image through the pipeline: the report and the pictures behind it.

    Args:
        report: probabilities (highest first), predicted class, calibration line, referral, TTA, explained class,
            metadata availability, lesion fraction, CAM method.
        mask: bool (H, W) lesion mask at the image's size.
        segmented: uint8 (H, W, 3) image x mask.
        views: uint8 (h, w, 3) per image input at the classifier's size.
        cams: per explained branch, the uint8 (h, w, 3) CAM overlay drawn over the view it looks at.
        small_mask: uint8 (h, w, 3) mask at the classifier's size.
    """

    report: dict
    mask: np.ndarray
    segmented: np.ndarray
    views: dict
    cams: dict = field(default_factory=dict)
    small_mask: np.ndarray | None = None


def explain_image(image, seg_model, run, age=None, sex=None, site=None, method="gradcam", layer=None, tta="none",
                  refer_at=0.90, cams=True, targets=None):
    """Segments, classifies and explains one RGB image with loaded models (the part `predict` and `serve` share).

    Args:
        image: uint8 (H, W, 3) RGB image of any size.
        seg_model: loaded segmentation model.
        run: `ClsRun` of the classifier (`load_cls_run`).
        age: years, or None (unknown).
        sex: "male" / "female", or None.
        site: anatomical site, or None.
        method: "gradcam" or "layercam".
        layer: CAM target layer (default: each encoder's last block).
        tta: none | flip | flip-rotate: the probabilities are the mean over these views.
        refer_at: target accuracy whose validation threshold decides "refer to a clinician".
        cams: compute the CAM overlays (False: probabilities only, one forward pass).
        targets: precomputed `cam_targets(run.model, layer)`; a caller that explains many images (the server)
            builds them once, since building them clones the model.

    Returns:
        `Explained`.
    """
    from skinkeras.data.masks import resize_mask
    from skinkeras.data.pipeline import resize_rgb
    from skinkeras.data.segdir import segmented_image
    from skinkeras.explain.gradcam import grad_cam, overlay, upsample_cams
    from skinkeras.inference import (
        model_image_size,
        one_image_inputs,
        predict_masks,
        predict_views,
        probability_to_mask,
    )
    from skinkeras.trust.referral import view_spread

    cls_model, classes = run.model, run.classes
    prob = predict_masks(seg_model, resize_rgb(image, model_image_size(seg_model))[None], 1)[0]
    mask = probability_to_mask(prob, image.shape[:2])
    segmented = segmented_image(image, mask)

    size = model_image_size(cls_model)
    views = {ORIGINAL: resize_rgb(image, size)[None], SEGMENTED: resize_rgb(segmented, size)[None]}
    # unknown sex / site: one line listing the valid values
    inputs, has_metadata = one_image_inputs(run.contract, views, run.encoder, age, sex, site)
    overlays, explained = {}, None
    if cams:
        result = grad_cam(cls_model, inputs, layer=layer, method=method, targets=targets)
        raw = result.probabilities[:1]
        explained = classes[int(result.class_index[0])]
        for target in result.targets:
            cam = upsample_cams(result.raw[target.branch], size)[0]
            # each branch's map is drawn over the view it looks at (the segmented branch over the segmented image)
            overlays[target.branch] = overlay(views.get(target.branch, views[ORIGINAL])[0], cam)
    else:
        raw = predict_views(cls_model, inputs, np.zeros(1, np.int64), np.arange(1), 1, "none")[0]
    spread = 0.0
    if tta != "none":
        turned = predict_views(cls_model, inputs, np.zeros(1, np.int64), np.arange(1), 1, tta)
        raw, spread = turned.mean(axis=0), float(view_spread(turned)[0])
    probs = run.calibrated(raw)[0]
    report = {
        **ranked_report(probs, classes, run.calibration_note, run.referral_threshold(float(refer_at)), refer_at),
        "tta": {"mode": tta, "spread": spread},
        "explained_class": explained,
        "metadata_available": has_metadata,
        "lesion_fraction": float(mask.mean()),
        "cam_method": method if cams else None,
    }
    small_mask = np.repeat(resize_mask(mask, size)[..., None] * 255, 3, -1).astype(np.uint8)
    return Explained(report, mask, segmented, {k: v[0] for k, v in views.items()}, overlays, small_mask)


def ranked_report(probs, classes, calibration_note, referral, refer_at):
    """The probabilities highest first, the predicted class and the referral decision of one image.

    Args:
        probs: (C,) probabilities the run answers with.
        classes: class names in label order.
        calibration_note: the line saying which probabilities these are.
        referral: (threshold or None, source line) of the run at `refer_at`.
        refer_at: the target accuracy of the referral threshold.
    """
    ranking = [(classes[i], float(probs[i])) for i in np.argsort(-np.asarray(probs))]
    threshold, source = referral
    confidence = float(np.max(probs))
    return {
        "probabilities": dict(ranking),
        "predicted": ranking[0][0],
        "calibration": calibration_note,
        "referral": {"refer": threshold is not None and confidence < threshold, "confidence": confidence,
                     "threshold": threshold, "target_accuracy": float(refer_at), "source": source},
    }


def predict_image(image_path, seg_model_path, cls_model_path, age=None, sex=None, site=None, out=None,
                  method="gradcam", layer=None, precision=None, tta="none", calibration=True, refer_at=0.90):
    """Segments, classifies and explains one image of any size (JPEG, PNG, ...).

    Writes into `out` (when given): ID_segmentation.png (the mask at the
    image's size, ISIC format), ID_segmented.jpg, ID_cam.png (image, mask and
    one CAM overlay per branch at the classifier's input size) and
    prediction.json.

    Args:
        image_path: the image.
        seg_model_path: segmentation model (.keras of `seg-train`).
        cls_model_path: RUN/best.keras of `cls-train` (its run folder gives the classes and metadata encoder).
        age: years, or None (unknown).
        sex: "male" / "female", or None.
        site: anatomical site (unified, HAM10000 or ISIC 2019 name), or None.
        out: output folder, or None to write nothing.
        method: "gradcam" or "layercam".
        layer: CAM target layer (default: each encoder's last block).
        precision: fp32 | bf16 | fp16 of the mask and the class probabilities (None: the models' own); the CAMs
            are computed in float32 whatever the models' precision.
        tta: none | flip | flip-rotate: the probabilities are the mean over these views (the CAMs explain the
            image as given).
        calibration: temperature-scale the probabilities by the run's calibration.json when it has one.
        refer_at: target accuracy whose validation threshold decides "refer to a clinician".

    Returns:
        dict with the sorted class probabilities, the explained class, the referral decision ("referral":
        refer, confidence, threshold, source), the calibration line, and the files written.
    """
    from skinkeras.data.masks import mask_name, write_mask
    from skinkeras.data.pipeline import read_rgb
    from skinkeras.data.segdir import JPEG_QUALITY
    from skinkeras.inference import load_cls_run, load_model

    image = read_rgb(image_path)  # ImageReadError: one line naming the file
    run = load_cls_run(cls_model_path, precision, calibration)
    seg_model = load_model(seg_model_path, task=SEGMENTATION, precision=precision)
    done = explain_image(image, seg_model, run, age, sex, site, method, layer, tta, refer_at)
    report = {"image": os.path.abspath(image_path), **done.report, "files": {}}
    if out:
        os.makedirs(out, exist_ok=True)
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        files = {"mask": os.path.join(out, mask_name(image_id)),
                 SEGMENTED: os.path.join(out, f"{image_id}_{SEGMENTED}.jpg"),
                 "cam": os.path.join(out, f"{image_id}_cam.png")}
        write_mask(files["mask"], done.mask)
        Image.fromarray(done.segmented).save(files[SEGMENTED], quality=JPEG_QUALITY)
        panels = [done.views[ORIGINAL], done.small_mask, *done.cams.values()]
        Image.fromarray(np.concatenate(panels, axis=1)).save(files["cam"])
        report["files"] = files
        report["cam_panels"] = ["image", "mask", *done.cams]
        runs.write_json(os.path.join(out, "prediction.json"), report)
    return report


def predict(cfg: PredictConfig):
    """The `predict` stage; returns the prediction report.

    Args:
        cfg: `PredictConfig`.
    """
    return predict_image(cfg.image, cfg.seg_model, cfg.cls_model, cfg.age, cfg.sex, cfg.site, cfg.out, cfg.method,
                         cfg.layer, cfg.precision, cfg.tta, cfg.calibration, cfg.refer_at)
