"""A plain-PyTorch TDBN, the reference that `python cli.py bench --backends torch-reference` times.

What a PyTorch user would write for the paper's model, with no Keras in the
process: two DenseNet encoders (torchvision's `densenet201` where torchvision
imports, else `DenseNet` below, which has torchvision's exact structure),
`nn.MultiheadAttention` with query = value = original tokens and key =
segmented tokens, then the FFN / LayerNorm / projection / metadata MLP /
additive fusion / head of `skinkeras/models/tdbn.py` and `skinkeras/layers/`,
at the same widths. Input layout NCHW (0-255 RGB, ImageNet-normalised inside
the model like Keras' `EncoderPreprocess`).

Run by the bench as a child process (`python experiments/bench/torch_reference.py --json ...`,
one JSON line of measured fields on stdout); it imports only torch, numpy and the standard library.

Parameter counts: Keras' `count_params` includes each BatchNormalization's
moving mean and variance (non-trainable weights), which torch keeps as
buffers; `keras_equivalent_params` adds them back (and leaves out torch's
`num_batches_tracked` counters). Keras' MultiHeadAttention with key_dim =
D / heads has the same weights as `nn.MultiheadAttention` (q, k, v and output
projections with biases), so nothing else differs.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's configurations: (growth rate, block sizes, initial features).
DENSENETS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}
MODELS = ("tdbn", "tdbn_no_meta")
# Keras BatchNormalization's default epsilon; keras.applications' DenseNet uses 1.001e-5.
KERAS_BN_EPS = 1e-3
DENSENET_BN_EPS = 1.001e-5


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1(bn_size * growth)-BN-ReLU-Conv3x3(growth), concatenated to its input (torchvision's)."""

    def __init__(self, in_channels, growth, bn_size=4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels, eps=DENSENET_BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth, eps=DENSENET_BN_EPS)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        """x (B, C, H, W) -> (B, C + growth, H, W)."""
        y = self.conv1(torch.relu(self.norm1(x)))
        y = self.conv2(torch.relu(self.norm2(y)))
        return torch.cat([x, y], 1)


class DenseNet(nn.Module):
    """torchvision's DenseNet feature extractor (no classifier), ending in norm5 + ReLU like Keras' `relu` layer.

    Args:
        growth: growth rate (32).
        blocks: layers per dense block ((6, 12, 48, 32) for DenseNet-201).
        init_features: channels of the stem convolution (64).
        bn_size: bottleneck width factor (4).
    """

    def __init__(self, growth=32, blocks=(6, 12, 48, 32), init_features=64, bn_size=4):
        super().__init__()
        layers = [nn.Conv2d(3, init_features, 7, stride=2, padding=3, bias=False),
                  nn.BatchNorm2d(init_features, eps=DENSENET_BN_EPS), nn.ReLU(inplace=True),
                  nn.MaxPool2d(3, stride=2, padding=1)]
        channels = init_features
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(_DenseLayer(channels, growth, bn_size))
                channels += growth
            if i < len(blocks) - 1:
                layers += [nn.BatchNorm2d(channels, eps=DENSENET_BN_EPS), nn.ReLU(inplace=True),
                           nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2, stride=2)]
                channels //= 2
        layers += [nn.BatchNorm2d(channels, eps=DENSENET_BN_EPS), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x):
        """Normalised NCHW images -> the stride-32 feature map (B, out_channels, H/32, W/32)."""
        return self.features(x)


def build_densenet(name="densenet201"):
    """A headless DenseNet with random weights: torchvision's where it imports, else `DenseNet`.

    Args:
        name: densenet121 | densenet169 | densenet201.

    Returns:
        (module mapping NCHW images to feature maps, output channels, "torchvision" or "plain torch").
    """
    if name not in DENSENETS:
        raise ValueError(f"Unknown reference encoder {name!r}; valid: {', '.join(DENSENETS)}")
    growth, blocks, init = DENSENETS[name]
    try:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        channels = net.classifier.in_features
        return nn.Sequential(net.features, nn.ReLU(inplace=False)), channels, "torchvision"
    except Exception:  # on a CPU torch with a CUDA torchvision the import itself fails (operator nms)
        net = DenseNet(growth, blocks, init)
        return net, net.out_channels, "plain torch"


def dense_bn_relu_dropout(in_dim, units, dropout):
    """Linear-BN-ReLU-Dropout, `skinkeras.models.tdbn.dense_bn_relu_dropout` (Keras BN momentum 0.9 = torch 0.1).

    Args:
        in_dim: input width.
        units: output width.
        dropout: dropout rate.
    """
    return nn.Sequential(nn.Linear(in_dim, units), nn.BatchNorm1d(units, eps=KERAS_BN_EPS, momentum=0.1),
                         nn.ReLU(), nn.Dropout(dropout))


class TDBN(nn.Module):
    """The TDBN of `skinkeras.models.tdbn.build_tdbn` (variants tdbn and tdbn_no_meta) in plain PyTorch.

    forward(original, segmented[, metadata, metadata_mask]) with NCHW 0-255 images returns logits
    (the softmax is left to the loss, as PyTorch users do).

    Args:
        num_classes: classes.
        encoder: densenet121 | densenet169 | densenet201.
        variant: tdbn | tdbn_no_meta.
        num_features: metadata width (tdbn).
        num_heads: cross-attention heads.
        ffn_dim: hidden width of the cross-attention FFN.
        attention_dropout: dropout of the attention block.
        dropout: dropout of the projections and the head.
        projection_dim: width of both projections (None: encoder channels).
        head_units: hidden widths of the head.
        tabular_units: the metadata MLP's two widths.
    """

    def __init__(self, num_classes=7, encoder="densenet201", variant="tdbn", num_features=12, num_heads=8,
                 ffn_dim=2048, attention_dropout=0.1, dropout=0.3, projection_dim=None, head_units=(512, 128),
                 tabular_units=(128, 256)):
        super().__init__()
        if variant not in MODELS:
            raise ValueError(f"Unknown reference model {variant!r}; valid: {', '.join(MODELS)}")
        self.variant = variant
        self.original_encoder, dim, self.encoder_source = build_densenet(encoder)
        self.segmented_encoder, _, _ = build_densenet(encoder)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.attention_drop = nn.Dropout(attention_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(attention_dropout),
                                 nn.Linear(ffn_dim, dim), nn.Dropout(attention_dropout))
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        width = int(projection_dim) if projection_dim else dim
        self.vision_projection = dense_bn_relu_dropout(dim, width, dropout)
        if variant == "tdbn":
            # Eq. 7: BN(ReLU(W2 BN(ReLU(W1 x)))), as TabularEmbedding.
            self.tabular = nn.Sequential(nn.Linear(num_features, tabular_units[0]), nn.ReLU(),
                                         nn.BatchNorm1d(tabular_units[0], eps=KERAS_BN_EPS, momentum=0.1),
                                         nn.Linear(tabular_units[0], tabular_units[1]), nn.ReLU(),
                                         nn.BatchNorm1d(tabular_units[1], eps=KERAS_BN_EPS, momentum=0.1))
            self.tabular_projection = dense_bn_relu_dropout(tabular_units[1], width, dropout)
        head, last = [], width
        for units in head_units:
            head.append(dense_bn_relu_dropout(last, units, dropout))
            last = units
        self.head = nn.Sequential(*head, nn.Linear(last, num_classes))

    def tokens(self, encoder, images):
        """NCHW 0-255 images -> (B, h*w, C) tokens of the encoder's last feature map.

        Args:
            encoder: one of the two DenseNets.
            images: (B, 3, H, W) 0-255 RGB.
        """
        fmap = encoder((images - self.mean) / self.std)
        return fmap.flatten(2).transpose(1, 2)

    def forward(self, original, segmented, metadata=None, metadata_mask=None):
        """Logits (B, num_classes) of NCHW 0-255 images (and metadata (B, F), availability (B, 1) for tdbn)."""
        orig = self.tokens(self.original_encoder, original)
        seg = self.tokens(self.segmented_encoder, segmented)
        attended, _ = self.attention(orig, seg, orig, need_weights=False)  # query, key, value (Eq. 5)
        z = self.norm1(orig + self.attention_drop(attended))
        z = self.norm2(z + self.ffn(z))
        vision = self.vision_projection(z.mean(1))
        if self.variant == "tdbn":
            gate = metadata_mask.reshape(-1, 1).to(vision.dtype)
            tabular = self.tabular_projection(self.tabular(metadata) * gate)
            vision = vision + gate * tabular  # Eq. 9, MaskedAdditiveFusion
        return self.head(vision)


def keras_equivalent_params(model):
    """Parameters as Keras' count_params counts them: torch parameters plus BatchNorm running mean / variance.

    Args:
        model: a torch module.
    """
    params = sum(p.numel() for p in model.parameters())
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return params + stats


def random_inputs(variant, batch_size, image_size, num_features, device, channels_last=False, seed=0):
    """Random NCHW 0-255 images (and metadata) for the model's forward.

    Args:
        variant: tdbn | tdbn_no_meta.
        batch_size: images per batch.
        image_size: square side.
        num_features: metadata width.
        device: torch device.
        channels_last: images in torch.channels_last memory format.
        seed: generator seed.
    """
    g = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = [torch.randint(0, 256, (batch_size, 3, image_size, image_size), generator=g).float()
              .to(device).contiguous(memory_format=fmt) for _ in range(2)]
    if variant != "tdbn":
        return images
    metadata = torch.rand(batch_size, num_features, generator=g).to(device)
    return images + [metadata, torch.ones(batch_size, 1, device=device)]


def host_memory_mb():
    """Peak resident memory of this process in MB: Linux's VmHWM (ru_maxrss keeps a parent's peak), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _sync(device):
    """Waits for queued device work, so the clock stops after it.

    Args:
        device: torch device.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    """Seconds `fn()` takes, device work included.

    Args:
        fn: zero-argument callable.
        device: torch device.
    """
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(variant="tdbn", encoder="densenet201", mode="train", image_size=224, batch_size=8, steps=3, repeats=3,
            precision="fp32", channels_last=False, num_classes=7, num_features=12):
    """Times the reference in this process; returns the bench row's measured fields.

    Args:
        variant: tdbn | tdbn_no_meta.
        encoder: densenet121 | densenet169 | densenet201.
        mode: train (AdamW step on cross-entropy) | infer (eval-mode forward under no_grad).
        image_size: square input side.
        batch_size: images per step.
        steps: timed steps per repeat.
        repeats: timed repeats (images/s is their median, with min and max).
        precision: fp32 | bf16 | fp16 (the last two via torch.autocast).
        channels_last: images and weights in torch.channels_last.
        num_classes: classes.
        num_features: metadata width.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if mode not in ("train", "infer"):
        raise ValueError(f"torch-reference measures train and infer, not {mode!r}")
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    model = TDBN(num_classes, encoder, variant, num_features).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    build_s = time.perf_counter() - start
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    # In training mode: eval-mode nn.MultiheadAttention takes a fused fast path whose attention products
    # FlopCounterMode does not see. Two samples, since BatchNorm1d cannot normalise one in training mode.
    model.train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*random_inputs(variant, 2, image_size, num_features, device, channels_last))
    flops = counter.get_total_flops() // 2

    inputs = random_inputs(variant, batch_size, image_size, num_features, device, channels_last)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
        loss_fn = nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(*inputs).float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(*inputs)

    first_step_s = _timed(step, device)
    times = [_timed(lambda: [step() for _ in range(steps)], device) for _ in range(repeats)]
    rates = [batch_size * steps / t for t in times]
    median = statistics.median(rates)
    params = keras_equivalent_params(model)
    return {
        "build_s": round(build_s, 3),
        "first_step_s": round(first_step_s, 3),
        "step_s": round(statistics.median(times) / steps, 4),
        "img_per_s": round(median, 2),
        "img_per_s_min": round(min(rates), 2),
        "img_per_s_max": round(max(rates), 2),
        "flops_per_image": int(flops),
        "flops_basis": "forward x3 (train)" if mode == "train" else "forward",
        "tflops_per_s": round(flops * median * (3 if mode == "train" else 1) / 1e12, 4),
        "host_mem_mb": host_memory_mb(),
        "device_mem_mb": (round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                          if device.type == "cuda" else None),
        "params": int(params),
        "size_mb": round(params * 4 / 2**20, 2),
        "note": f"{model.encoder_source} DenseNet, NCHW" + (" channels_last" if channels_last else ""),
    }


def main(argv=None):
    """Command line: one JSON line of measurements per (model, encoder, mode), in that order, on stdout.

    Args:
        argv: arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tdbn"])
    parser.add_argument("--encoders", nargs="+", default=["densenet201"])
    parser.add_argument("--modes", nargs="+", default=["train"])
    parser.add_argument("--rows", nargs="+", default=None,
                        help="model,encoder,mode triples measured in this order (instead of the cross product)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--num-classes", type=int, default=7)
    parser.add_argument("--num-features", type=int, default=12, help="metadata width (skinkeras' MetadataEncoder)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    combos = ([tuple(r.split(",")) for r in args.rows] if args.rows else
              [(m, e, mode) for m in args.models for e in args.encoders for mode in args.modes])
    results = []
    for variant, encoder, mode in combos:
        try:
            values = measure(variant, encoder, mode, args.image_size, args.batch_size, args.steps, args.repeats,
                             args.precision, args.channels_last, args.num_classes, args.num_features)
            results.append({"status": "ok", **values})
        except Exception as e:  # one failing row should not lose the others
            results.append({"status": f"error: {type(e).__name__}: {e}"})
    if args.json:
        print(json.dumps(results), flush=True)
    else:
        for result in results:
            print(result)


if __name__ == "__main__":
    sys.exit(main())
