"""Deployable artifacts of trained models: ONNX, TF SavedModel, LiteRT and torch.export, each with a
`model.json` contract sidecar and a parity check against the Keras model (`export_model_file`)."""

from skinkeras.exporting.artifacts import (
    FORMATS,
    MODEL_JSON,
    TOLERANCE,
    ExportError,
    export,
    export_model_file,
    read_sidecar,
)

__all__ = ["FORMATS", "MODEL_JSON", "TOLERANCE", "ExportError", "export", "export_model_file", "read_sidecar"]
