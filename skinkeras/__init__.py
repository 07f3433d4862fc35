"""skinkeras: explainable skin-lesion segmentation and classification in Keras 3."""

__version__ = "0.1.0"
