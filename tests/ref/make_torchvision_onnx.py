#!/usr/bin/env python3
"""torchvision's resnet18, mobilenet_v2 and mobilenet_v3_large, and a torch.nn transformer encoder, as ONNX
models, for comparing kiln with onnxruntime.

Weights are random (torch.manual_seed, torchvision's own initialisation; nothing is downloaded). The
BatchNorm running statistics are then measured on a few batches of random images in training mode, so
that activations keep the scale they have in a trained network instead of growing layer by layer, and
each BatchNorm's affine parameters are drawn at random so that folding them into the convolutions
matters. Each model is exported in eval mode by torch.onnx.export at opset 13 with a dynamic batch
axis, as users export them (PyTorch folds the BatchNorms into the convolutions), input "input"
(N, 3, 224, 224) and output "output" (N, 1000).

The transformer encoder is torch.nn.TransformerEncoder as a BERT-small-sized encoder uses it: 4 layers,
d_model 256, 4 heads, feed-forward 1024, GELU, pre-norm, batch first, over 128 positions, followed by a
mean over positions and a 10-way linear head; input "input" (N, 128, 256), output "output" (N, 10). Its
weights keep torch's initialisation (LayerNorm keeps activations in scale).

The files are 45 MB and 14 MB, so they are generated where they are needed (bench/models/, the build
tree) and never committed.

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/make_torchvision_onnx.py OUT_DIR [MODEL...]
(MODEL: resnet18, mobilenet_v2, mobilenet_v3_large, transformer; default all). Writes OUT_DIR/<model>.onnx.
"""
import os
import sys

import torch
import torch.nn as nn
import torchvision



class TransformerClassifier(nn.Module):
    """Encoder, mean over positions, linear head: (N, 128, 256) -> (N, 10)."""

    def __init__(self, weights=None):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.head = nn.Linear(256, 10)
        for m in self.modules():  # the encoder's layers are copies of one: draw each its own weights
            if isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


# name: (constructor, seed, input shape of one sample)
IMAGE = (3, 224, 224)
MODELS = {"resnet18": (torchvision.models.resnet18, 18, IMAGE),
          "mobilenet_v2": (torchvision.models.mobilenet_v2, 2, IMAGE),
          "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large, 3, IMAGE),
          "transformer": (TransformerClassifier, 4, (128, 256))}


def calibrate_batchnorms(net, seed, sample_shape):
    """Running statistics averaged over 4 batches of 8 random images (momentum None: a plain mean)."""
    generator = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(8, *sample_shape, generator=generator) * 2 - 1)
    net.eval()


def export(name, out_dir):
    make, seed, sample_shape = MODELS[name]
    torch.manual_seed(seed)
    net = make(weights=None)
    calibrate_batchnorms(net, seed, sample_shape)
    path = os.path.join(out_dir, name + ".onnx")
    x = torch.rand(1, *sample_shape)
    torch.onnx.export(net, x, path, opset_version=13, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    print("%s: %d bytes, %d parameters" % (path, os.path.getsize(path), sum(p.numel() for p in net.parameters())))


if __name__ == "__main__":
    if len(sys.argv) < 2 or any(m not in MODELS for m in sys.argv[2:]):
        sys.exit("usage: make_torchvision_onnx.py OUT_DIR [%s ...]" % " | ".join(MODELS))
    os.makedirs(sys.argv[1], exist_ok=True)
    torch.set_num_threads(2)
    for model in sys.argv[2:] or list(MODELS):
        export(model, sys.argv[1])
