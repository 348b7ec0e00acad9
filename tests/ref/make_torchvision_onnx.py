#!/usr/bin/env python3
"""torchvision's resnet18 and mobilenet_v2 as ONNX models, for comparing kiln with onnxruntime.

Weights are random (torch.manual_seed, torchvision's own initialisation; nothing is downloaded). The
BatchNorm running statistics are then measured on a few batches of random images in training mode, so
that activations keep the scale they have in a trained network instead of growing layer by layer, and
each BatchNorm's affine parameters are drawn at random so that folding them into the convolutions
matters. Each model is exported in eval mode by torch.onnx.export at opset 13 with a dynamic batch
axis, as users export them (PyTorch folds the BatchNorms into the convolutions), input "input"
(N, 3, 224, 224) and output "output" (N, 1000).

The files are 45 MB and 14 MB, so they are generated where they are needed (bench/models/, the build
tree) and never committed.

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/make_torchvision_onnx.py OUT_DIR [MODEL...]
(MODEL: resnet18, mobilenet_v2; default both). Writes OUT_DIR/<model>.onnx.
"""
import os
import sys

import torch
import torch.nn as nn
import torchvision

MODELS = {"resnet18": (torchvision.models.resnet18, 18), "mobilenet_v2": (torchvision.models.mobilenet_v2, 2)}


def calibrate_batchnorms(net, seed):
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
            net(torch.rand(8, 3, 224, 224, generator=generator) * 2 - 1)
    net.eval()


def export(name, out_dir):
    make, seed = MODELS[name]
    torch.manual_seed(seed)
    net = make(weights=None)
    calibrate_batchnorms(net, seed)
    path = os.path.join(out_dir, name + ".onnx")
    x = torch.rand(1, 3, 224, 224)
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
