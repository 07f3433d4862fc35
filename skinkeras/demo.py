"""The embedded main job: synthetic data -> seg-train -> seg-eval -> segment, with small settings."""

import os
import time

from skinkeras.config import SegTrainConfig
from skinkeras.data.isic2018 import OFFICIAL_FOLDERS
from skinkeras.data.synthetic import make_synthetic
from skinkeras.evaluate import seg_eval_model, segment_folder
from skinkeras.train import train_segmentation


def run_demo(out, n=96, epochs=6, image_size=96, encoder="efficientnetb0", echo=print):
    """Runs the whole segmentation stage on a generated dataset and prints where everything is.

    Re-running reuses the data and the finished training run (it resumes it),
    so an interrupted demo picks up where it stopped.

    Args:
        out: folder for data and runs.
        n: synthetic images per dataset.
        epochs: training epochs.
        image_size: training size (multiple of 32).
        encoder: encoder table name (EfficientNetB3 is the paper's; smaller is faster on a CPU).
        echo: print function.
    """
    started = time.time()
    data = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data, "isic2018")):
        echo(f"[1/4] make-synthetic -> {data}")
        folders = make_synthetic(data, n=n, seed=0)
    else:
        echo(f"[1/4] synthetic data already in {data}")
        folders = {name: os.path.join(data, name) for name in ("isic2018", "ham10000", "isic2019")}

    run_dir = os.path.join(out, "seg-train")
    echo(f"[2/4] seg-train deep_unet/{encoder} at {image_size}px, {epochs} epochs, weights none -> {run_dir}")
    cfg = SegTrainConfig(data_dir=folders["isic2018"], encoder=encoder, weights="none", image_size=image_size,
                         epochs=epochs, batch_size=8, learning_rate=1e-3, out=run_dir)
    train_segmentation(cfg, resume=os.path.isfile(os.path.join(run_dir, "config.json")))

    eval_dir = os.path.join(out, "seg-eval")
    echo(f"[3/4] seg-eval on the held-out {OFFICIAL_FOLDERS['val'][0]} images -> {eval_dir}")
    metrics = seg_eval_model(os.path.join(run_dir, "best.keras"), eval_dir, data_dir=folders["isic2018"],
                             subset="val")

    seg_dir = os.path.join(out, "segmented")
    echo(f"[4/4] segment the HAM10000 images -> {seg_dir}")
    ham = folders["ham10000"]
    for part in sorted(os.listdir(ham)):
        if part.startswith("HAM10000_images"):
            segment_folder(os.path.join(run_dir, "best.keras"), os.path.join(ham, part), seg_dir)

    echo("")
    echo(f"Demo finished in {(time.time() - started) / 60:.1f} min.")
    echo(f"  data:             {data}")
    echo(f"  training run:     {run_dir}  (best.keras, history.csv, training_curves.png, metrics.json)")
    echo(f"  evaluation:       {eval_dir}  (masks/ in ISIC format, per_image.csv, metrics.json)")
    echo(f"    dice={metrics['dice']:.3f} jaccard={metrics['jaccard']:.3f} "
         f"threshold_jaccard={metrics['threshold_jaccard']:.3f} on {metrics['images']} images")
    echo(f"  segmented images: {os.path.join(seg_dir, 'segmented')}  (masks in {os.path.join(seg_dir, 'masks')})")
    return {"run_dir": run_dir, "eval_dir": eval_dir, "seg_dir": seg_dir, "metrics": metrics}
