#!/usr/bin/env python3
"""PyTorch-exported ONNX models for kiln's importer test (tests/test_onnx_import.c).

The three Fashion-MNIST models of examples/specs/ (their PyTorch twins are in bench/torch_train_speed.py)
with every width divided by 4 so each file stays small: the MLP 784-64-32-10, the CNN with 8 and 16
channels and a 32-unit dense layer, the ViT with 16-dim tokens, 4 heads and a 32-unit MLP. Weights are
random (seeded); BatchNorm running statistics are made non-trivial so eval-mode BatchNorm matters.
Each is exported by torch.onnx.export at opset 13 with a dynamic batch axis, in eval mode, and run by
PyTorch on 5 random images, whose inputs and outputs are stored beside it.

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/make_onnx_fixtures.py
Output: tests/ref/data/onnx_<name>.onnx and onnx_<name>.bin, the latter records of
    u32 name length, name bytes, u32 ndim, i64 dims[ndim], f32 data[prod(dims)]   (little-endian)
named "input" (5, 1, 28, 28) and "output" (5, 10).
"""
import os
import struct

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")


class Block(nn.Module):
    """Pre-LN encoder block, as kiln's `transformer D HEADS FF` line builds it."""

    def __init__(self, d, heads, ff):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, d=16, heads=4, ff=32):
        super().__init__()
        self.embed = nn.Linear(16, d)
        self.pos = nn.Parameter(torch.randn(49, d) * 0.02)
        self.blocks = nn.Sequential(Block(d, heads, ff), Block(d, heads, ff))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        n = x.shape[0]
        t = x.reshape(n, 1, 7, 4, 7, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, 49, 16)
        t = self.blocks(self.embed(t) + self.pos)
        return self.head(self.ln(t).mean(dim=1))


def model(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                             nn.Linear(32, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Dropout(0.25), nn.Linear(16 * 7 * 7, 32), nn.ReLU(),
                             nn.Linear(32, 10))
    return ViT()


def write(path, records):
    with open(path, "wb") as f:
        for name, t in records:
            t = t.detach().to(torch.float32).contiguous()
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)) + raw)
            f.write(struct.pack("<I", t.dim()))
            f.write(struct.pack("<%dq" % t.dim(), *t.shape))
            f.write(t.numpy().astype("<f4").tobytes())


def make(name, seed):
    torch.manual_seed(seed)
    net = model(name)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    net.eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        y = net(x)
    path = os.path.join(OUT, "onnx_%s.onnx" % name)
    # PRESERVE keeps BatchNormalization nodes (an eval export would fold them into the convolutions);
    # without PyTorch's constant folding, kiln's importer does the folding (weight transposes ...).
    torch.onnx.export(net, x, path, opset_version=13, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    write(os.path.join(OUT, "onnx_%s.bin" % name), [("input", x), ("output", y)])
    print("onnx_%s.onnx: %d bytes, %d parameters" % (name, os.path.getsize(path),
                                                      sum(p.numel() for p in net.parameters())))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make("mlp", 11)
    make("cnn", 12)
    make("vit", 13)
