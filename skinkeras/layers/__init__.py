"""Custom layers, one file per block of the paper; importing this registers them."""

from skinkeras.layers.aspp import ASPP
from skinkeras.layers.attention_gate import DepthwiseAttentionGate
from skinkeras.layers.preprocess import EncoderPreprocess
from skinkeras.layers.separable_block import SeparableDoubleConv

__all__ = ["ASPP", "DepthwiseAttentionGate", "EncoderPreprocess", "SeparableDoubleConv"]
