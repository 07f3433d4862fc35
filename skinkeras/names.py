"""The names a model takes and gives (inputs, outputs, tasks), spelled once, below both data and models.

`skinkeras.models.contract` carries them in each model's `Contract`; the data modules name arrays and
folders after them (the segmented images feed the SEGMENTED input). This module imports nothing from
skinkeras, so every layer of the package may import it.
"""

# Input names.
IMAGE = "image"  # segmentation models: one 0-255 RGB image
ORIGINAL = "original"  # classifiers: the dermoscopic image
SEGMENTED = "segmented"  # classifiers: original x predicted lesion mask (paper Figure 2)
METADATA = "metadata"  # classifiers: encoded clinical metadata (B, F)
METADATA_MASK = "metadata_mask"  # classifiers: per-sample availability (B, 1) in {0, 1}
IMAGE_INPUTS = (ORIGINAL, SEGMENTED)
METADATA_INPUTS = (METADATA, METADATA_MASK)

# Output and layer names.
MASK = "mask"  # segmentation main output
AUX_OUTPUTS = ("aux1", "aux2")  # Deep-UNet deep-supervision outputs (1/4 and 1/8 resolution)
LOGITS = "logits"  # classifiers: pre-softmax class scores
PROBABILITIES = "probabilities"  # classifiers: the softmax output

# Tasks.
SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"

# The formats `export` writes (Keras' `model.export` names), for the config's check below the exporter.
EXPORT_FORMATS = ("onnx", "tf_saved_model", "litert", "torch")
