"""A plain-PyTorch forward of an EfficientNet-Lite state dict, written from the checkpoint alone.

It is the reference the Keras port is checked against: functional torch ops on the state dict's tensors, with
TensorFlow's "same" padding (pad more at the bottom / right when the total is odd) and BatchNorm epsilon 1e-3.
It shares no code with `skinkeras.models.efficientnet_lite`: the block structure is read off the tensor names
and shapes (an expansion exists where `_expand_conv` does; the stride comes from the caller's stage table).
"""

import math
import re

import torch
import torch.nn.functional as F


def _same_pad(x, kernel, stride):
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-3)


def _conv(x, weight, stride=1, groups=1):
    kernel = weight.shape[-1]
    return F.conv2d(_same_pad(x, kernel, stride), weight, stride=stride, groups=groups)


def forward(sd, images, block_strides):
    """ImageNet logits of `images` ((B, H, W, 3) float 0-255 numpy) under state dict `sd` (name -> numpy).

    Args:
        sd: the state dict.
        images: the batch.
        block_strides: the depthwise stride of each block, in order.
    """
    sd = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = (x - 127.5) / 127.5
    x = F.relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    count = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k)))
    assert count == len(block_strides)
    for n in range(count):
        p = f"_blocks.{n}"
        inputs = x
        if f"{p}._expand_conv.weight" in sd:
            x = F.relu6(_bn(_conv(x, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
        dw = sd[f"{p}._depthwise_conv.weight"]
        x = F.relu6(_bn(_conv(x, dw, block_strides[n], groups=dw.shape[0]), sd, f"{p}._bn1"))
        x = _bn(_conv(x, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
        if block_strides[n] == 1 and x.shape == inputs.shape:
            x = x + inputs
    x = F.relu6(_bn(_conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    x = x.mean(dim=(2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"]).detach().numpy()
