"""The segmentation stage (paper 4.1): train, evaluate, and `segment` the images the classifier reads."""
