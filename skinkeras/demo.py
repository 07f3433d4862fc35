"""The embedded main job on synthetic data, with small settings.

make-synthetic -> seg-train -> seg-eval -> segment -> cls-train (TDBN and the
original-only baseline) -> cls-eval -> gradcam -> predict.
"""

import os
import time

from skinkeras.classification.evaluate import cls_eval
from skinkeras.classification.train import train_classification
from skinkeras.config import ClsTrainConfig, SegTrainConfig
from skinkeras.data.isic2018 import OFFICIAL_FOLDERS
from skinkeras.data.segdir import SegDir
from skinkeras.data.synthetic import make_synthetic
from skinkeras.explain.cam_report import gradcam_report
from skinkeras.explain.predict import predict_image
from skinkeras.segmentation.evaluate import seg_eval_model
from skinkeras.segmentation.segment import segment_folder
from skinkeras.segmentation.train import train_segmentation

STEPS = 8


def run_demo(out, n=96, epochs=6, image_size=96, encoder="efficientnetb0", cls_encoder="mobilenetv2",
             cls_image_size=64, cls_epochs=4, echo=print):
    """Runs the whole pipeline on a generated dataset and prints where everything is.

    Re-running reuses the data and the finished training run (it resumes it),
    so an interrupted demo picks up where it stopped.

    Args:
        out: folder for data and runs.
        n: synthetic images per dataset.
        epochs: segmentation training epochs.
        image_size: segmentation training size (multiple of 32).
        encoder: segmentation encoder (EfficientNetB3 is the paper's; smaller is faster on a CPU).
        cls_encoder: classification encoder of both branches (DenseNet201 is the paper's).
        cls_image_size: classification input size.
        cls_epochs: classification training epochs.
        echo: print function.
    """
    started = time.time()
    data = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data, "isic2018")):
        echo(f"[1/{STEPS}] make-synthetic -> {data}")
        folders = make_synthetic(data, n=n, seed=0)
    else:
        echo(f"[1/{STEPS}] synthetic data already in {data}")
        folders = {name: os.path.join(data, name) for name in ("isic2018", "ham10000", "isic2019")}

    run_dir = os.path.join(out, "seg-train")
    echo(f"[2/{STEPS}] seg-train deep_unet/{encoder} at {image_size}px, {epochs} epochs, weights none -> {run_dir}")
    cfg = SegTrainConfig(data_dir=folders["isic2018"], encoder=encoder, weights="none", image_size=image_size,
                         epochs=epochs, batch_size=8, learning_rate=1e-3, out=run_dir)
    train_segmentation(cfg, resume=os.path.isfile(os.path.join(run_dir, "config.json")))

    eval_dir = os.path.join(out, "seg-eval")
    echo(f"[3/{STEPS}] seg-eval on the held-out {OFFICIAL_FOLDERS['val'][0]} images -> {eval_dir}")
    metrics = seg_eval_model(os.path.join(run_dir, "best.keras"), eval_dir, data_dir=folders["isic2018"],
                             subset="val")

    seg_dir = os.path.join(out, "segdir")
    echo(f"[4/{STEPS}] segment the HAM10000 images -> {seg_dir}")
    ham = folders["ham10000"]
    for part in sorted(os.listdir(ham)):
        if part.startswith("HAM10000_images"):
            segment_folder(os.path.join(run_dir, "best.keras"), os.path.join(ham, part), seg_dir)

    cls_runs = {}
    for variant in ("tdbn", "original_only"):
        cls_runs[variant] = os.path.join(out, f"cls-{variant}")
        echo(f"[5/{STEPS}] cls-train {variant}/{cls_encoder} at {cls_image_size}px, {cls_epochs} epochs, weights none "
             f"-> {cls_runs[variant]}")
        cls_cfg = ClsTrainConfig(dataset="ham10000", data_dir=ham, seg_dir=seg_dir, arch=variant, encoder=cls_encoder,
                                 weights="none", image_size=cls_image_size, epochs=cls_epochs, batch_size=16,
                                 learning_rate=2e-3, out=cls_runs[variant])
        train_classification(cls_cfg, resume=os.path.isfile(os.path.join(cls_runs[variant], "config.json")))
    tdbn_model = os.path.join(cls_runs["tdbn"], "best.keras")

    cls_eval_dir = os.path.join(out, "cls-eval")
    echo(f"[6/{STEPS}] cls-eval of the TDBN on its test split -> {cls_eval_dir}")
    cls_metrics = cls_eval(tdbn_model, cls_eval_dir)

    cam_dir = os.path.join(out, "gradcam")
    echo(f"[7/{STEPS}] gradcam: TDBN and the original-only baseline on 8 test images -> {cam_dir}")
    cam_metrics = gradcam_report(tdbn_model, cam_dir, os.path.join(cls_runs["original_only"], "best.keras"), n=8,
                                 progress=False)

    predict_dir = os.path.join(out, "predict")
    image = sorted(os.listdir(os.path.join(ham, "HAM10000_images_part_1")))[0]
    echo(f"[8/{STEPS}] predict {image} (age 55, male, back) -> {predict_dir}")
    prediction = predict_image(os.path.join(ham, "HAM10000_images_part_1", image), os.path.join(run_dir, "best.keras"),
                               tdbn_model, age=55, sex="male", site="back", out=predict_dir)

    echo("")
    echo(f"Demo finished in {(time.time() - started) / 60:.1f} min.")
    echo(f"  data:             {data}")
    echo(f"  training run:     {run_dir}  (best.keras, history.csv, training_curves.png, metrics.json)")
    echo(f"  evaluation:       {eval_dir}  (masks/ in ISIC format, per_image.csv, metrics.json)")
    echo(f"    dice={metrics['dice']:.3f} jaccard={metrics['jaccard']:.3f} "
         f"threshold_jaccard={metrics['threshold_jaccard']:.3f} on {metrics['images']} images")
    echo(f"  segmented images: {SegDir(seg_dir).segmented_folder}  (masks in {SegDir(seg_dir).masks_folder})")
    echo(f"  classification:   {cls_runs['tdbn']}, {cls_runs['original_only']}")
    echo(f"  cls-eval:         {cls_eval_dir}  (predictions.csv in ISIC format, confusion_matrix.png, roc.png)")
    echo(f"    accuracy={cls_metrics['accuracy']:.3f} balanced_accuracy={cls_metrics['balanced_accuracy']:.3f} "
         f"on {cls_metrics['images']} test images (a tiny synthetic set: chance is 1/7)")
    tdbn_cam = cam_metrics["models"]["model"]["branches"]["original"]
    echo(f"  gradcam:          {cam_dir}  (figure7.png, overlays/, cams.npz, cam_metrics.json)")
    echo(f"    TDBN CAM mass in lesion {tdbn_cam['mass_in_lesion']:.3f}, pointing game {tdbn_cam['pointing_game']:.3f} "
         f"({cam_metrics['mask_source']})")
    echo(f"  predict:          {predict_dir}  (mask, segmented image, CAM, prediction.json): "
         f"{prediction['predicted']} {prediction['probabilities'][prediction['predicted']]:.3f}")
    return {"run_dir": run_dir, "eval_dir": eval_dir, "seg_dir": seg_dir, "metrics": metrics, "cls_runs": cls_runs,
            "cls_metrics": cls_metrics, "cam_metrics": cam_metrics, "prediction": prediction}
