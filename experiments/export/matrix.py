"""Which (format x model) pairs export under the current backend: the README's format table.

Builds each model of `--models` with random weights (the segmentation models and the TDBN variants on
`--encoder`, EfficientNet-Lite0 by default; the Table 2 baselines on their own; 64 px by default, where the
TDBN's attention sees 4 tokens), exports each to each format through `skinkeras.export`, and prints one line
per pair: the parity difference, or the one-line refusal.

    for b in tensorflow jax torch; do KERAS_BACKEND=$b python experiments/export/matrix.py --out /tmp/matrix; done
    KERAS_BACKEND=tensorflow python experiments/export/matrix.py --models unet,unetpp,deeplabv3plus,resnet50 \
        --image-size 96 --out /tmp/matrix
"""

import argparse
import os
import time

import keras

from skinkeras.config import ClsTrainConfig, SegTrainConfig
from skinkeras.exporting import FORMATS, export
from skinkeras.models.contract import export_model
from skinkeras.models.registry import build_model, get_architecture
from skinkeras.names import SEGMENTATION


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/export-matrix")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--models", default="deep_unet,tdbn,original_only")
    parser.add_argument("--image-size", type=int, default=64, help="Xception needs at least 71")
    parser.add_argument("--encoder", default="efficientnet_lite0", help="of the segmentation models and TDBN variants")
    args = parser.parse_args()
    backend = keras.backend.backend()
    out = os.path.join(args.out, backend)
    os.makedirs(out, exist_ok=True)
    paths = {}
    for name in args.models.split(","):
        arch = get_architecture(name)
        if arch.task == SEGMENTATION:
            model = export_model(build_model(SegTrainConfig(arch=name, encoder=args.encoder, weights="none",
                                                            image_size=args.image_size)))
        else:
            model = build_model(ClsTrainConfig(arch=name, encoder=args.encoder, weights="none",
                                               image_size=args.image_size, ffn_dim=64, head_units=[32]),
                                num_classes=7, **({"num_features": 12} if arch.needs_metadata else {}))
        paths[name] = os.path.join(out, f"{name}.keras")
        model.save(paths[name])
    for fmt in args.formats.split(","):
        for name, path in paths.items():
            begin = time.perf_counter()
            try:
                sidecar = export(path, fmt, os.path.join(out, f"{name}-{fmt}"), echo=lambda *a: None)
                result = f"ok, parity {sidecar['parity']['max_abs_diff']:.1e}"
            except Exception as exc:  # the refusal line is the result
                result = f"refused: {exc}"
            print(f"| {backend} | {fmt} | {name} | {result} | {time.perf_counter() - begin:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
