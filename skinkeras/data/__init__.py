"""Datasets in their official layouts, the input pipeline and the synthetic generator."""
