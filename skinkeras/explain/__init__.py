"""Explainability: Grad-CAM through each backend's own gradients, measured against the lesion (paper 6.4)."""
