"""Custom layers, one file per block of the paper; importing this registers them."""

from skinkeras.layers.aspp import ASPP
from skinkeras.layers.attention_gate import DepthwiseAttentionGate
from skinkeras.layers.cross_attention import CrossAttentionBlock
from skinkeras.layers.fusion import MaskedAdditiveFusion
from skinkeras.layers.preprocess import EncoderPreprocess
from skinkeras.layers.separable_block import SeparableDoubleConv
from skinkeras.layers.tabular import MetadataTransformer, TabularEmbedding
from skinkeras.layers.vit import PatchEmbedding, SelectToken, TransformerEncoderBlock

__all__ = [
    "ASPP",
    "CrossAttentionBlock",
    "DepthwiseAttentionGate",
    "EncoderPreprocess",
    "MaskedAdditiveFusion",
    "MetadataTransformer",
    "PatchEmbedding",
    "SelectToken",
    "SeparableDoubleConv",
    "TabularEmbedding",
    "TransformerEncoderBlock",
]
