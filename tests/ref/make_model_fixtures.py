#!/usr/bin/env python3
"""PyTorch reference fixtures for kiln's model tests (tests/test_models_torch.c).

For an MLP, a CNN (with BatchNorm in training mode and a residual block), a CNN whose second
convolution is wide enough that kiln trains it by Winograd's transforms (src/ops/conv_winograd.c) and a
small vision transformer, written here in PyTorch functional form with the exact parameter names and layouts that
kiln's spec parser gives (src/train/spec.c), this script stores the parameters, an input batch, the
labels, the logits, the cross-entropy loss and the gradient of every parameter, all computed in float64.

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/make_model_fixtures.py
Output: tests/ref/data/model_<name>.bin, a sequence of records
    u32 name length, name bytes, u32 ndim, i64 dims[ndim], f32 data[prod(dims)]   (little-endian)
"""
import math
import os
import struct

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")

SPECS = {
    "mlp": """
input 20
dense 16
relu
dense 12
tanh
dense 8
leakyrelu=0.1
dense 6
elu
dense 5
""",
    "cnn": """
input 2 8 8
conv 4 3 pad=1
batchnorm
relu
maxpool 2
residual
conv 4 3 pad=1
elu
end
conv 6 3 stride=2 pad=1 groups=2
gelu=tanh
avgpool 2
flatten
dense 5
""",
    "cnn_wide": """
input 3 10 10
conv 16 3 pad=1
relu
conv 24 3 pad=1
batchnorm
relu
maxpool 2
flatten
dense 5
""",
    "vit": """
input 1 8 8
patchify 4
dense 12
posembed
transformer 12 3 24
layernorm
meanpool
dense 5
""",
}


def param(params, name, *shape, scale=0.5):
    t = (torch.rand(*shape, dtype=torch.float64) * 2 - 1) * scale
    params[name] = t.requires_grad_(True)
    return params[name]


def dense2d(params, name, x, out):  # Gemm, weight (out, in)
    w = param(params, name + ".weight", out, x.shape[1], scale=1 / math.sqrt(x.shape[1]))
    b = param(params, name + ".bias", out)
    return x @ w.t() + b


def dense_seq(params, name, x, out):  # MatMul + Add, weight (in, out)
    w = param(params, name + ".weight", x.shape[-1], out, scale=1 / math.sqrt(x.shape[-1]))
    b = param(params, name + ".bias", out)
    return x @ w + b


def layernorm(params, name, x):
    d = x.shape[-1]
    w = param(params, name + ".weight", d)
    with torch.no_grad():
        w.add_(1.0)
    b = param(params, name + ".bias", d, scale=0.1)
    return F.layer_norm(x, (d,), w, b, eps=1e-5)


def mlp(params, x):
    h = torch.relu(dense2d(params, "dense1", x, 16))
    h = torch.tanh(dense2d(params, "dense3", h, 12))
    h = F.leaky_relu(dense2d(params, "dense5", h, 8), 0.1)
    h = F.elu(dense2d(params, "dense7", h, 6))
    return dense2d(params, "dense9", h, 5)


def conv(params, name, x, out, k, stride=1, pad=0, groups=1):
    cin = x.shape[1]
    bound = 1 / math.sqrt(cin // groups * k * k)
    w = param(params, name + ".weight", out, cin // groups, k, k, scale=bound)
    b = param(params, name + ".bias", out, scale=bound)
    return F.conv2d(x, w, b, stride=stride, padding=pad, groups=groups)


def cnn(params, x, states):
    h = conv(params, "conv1", x, 4, 3, pad=1)
    w = param(params, "batchnorm2.weight", 4)
    with torch.no_grad():
        w.add_(1.0)
    b = param(params, "batchnorm2.bias", 4, scale=0.1)
    mean = torch.zeros(4, dtype=torch.float64)
    var = torch.ones(4, dtype=torch.float64)
    h = F.batch_norm(h, mean, var, w, b, training=True, momentum=0.1, eps=1e-5)
    states["batchnorm2.running_mean"] = mean
    states["batchnorm2.running_var"] = var
    h = F.max_pool2d(torch.relu(h), 2, 2)
    h = h + F.elu(conv(params, "conv6", h, 4, 3, pad=1))
    h = F.gelu(conv(params, "conv9", h, 6, 3, stride=2, pad=1, groups=2), approximate="tanh")
    h = F.avg_pool2d(h, 2, 2).flatten(1)
    return dense2d(params, "dense13", h, 5)


def cnn_wide(params, x, states):
    h = torch.relu(conv(params, "conv1", x, 16, 3, pad=1))
    h = conv(params, "conv3", h, 24, 3, pad=1)  # 16 -> 24 channels, 3x3, stride 1: Winograd in kiln
    w = param(params, "batchnorm4.weight", 24)
    with torch.no_grad():
        w.add_(1.0)
    b = param(params, "batchnorm4.bias", 24, scale=0.1)
    mean = torch.zeros(24, dtype=torch.float64)
    var = torch.ones(24, dtype=torch.float64)
    h = F.batch_norm(h, mean, var, w, b, training=True, momentum=0.1, eps=1e-5)
    states["batchnorm4.running_mean"] = mean
    states["batchnorm4.running_var"] = var
    h = F.max_pool2d(torch.relu(h), 2, 2).flatten(1)
    return dense2d(params, "dense8", h, 5)


def vit(params, x):
    n, c, hh, ww = x.shape
    p = 4
    t = x.reshape(n, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)
    t = dense_seq(params, "dense2", t, 12)
    t = t + param(params, "posembed3.weight", t.shape[1], 12, scale=0.1)
    d, heads = 12, 3
    hd = d // heads
    blk = "transformer4"
    h = layernorm(params, blk + ".ln1", t)
    q = dense_seq(params, blk + ".query", h, d).reshape(n, -1, heads, hd).permute(0, 2, 1, 3)
    k = dense_seq(params, blk + ".key", h, d).reshape(n, -1, heads, hd).permute(0, 2, 3, 1)
    v = dense_seq(params, blk + ".value", h, d).reshape(n, -1, heads, hd).permute(0, 2, 1, 3)
    a = torch.softmax((q @ k) * (1 / math.sqrt(hd)), dim=-1) @ v
    a = a.permute(0, 2, 1, 3).reshape(n, -1, d)
    t = t + dense_seq(params, blk + ".out", a, d)
    h = layernorm(params, blk + ".ln2", t)
    h = F.gelu(dense_seq(params, blk + ".fc1", h, 24))
    t = t + dense_seq(params, blk + ".fc2", h, d)
    t = layernorm(params, "layernorm5", t).mean(dim=1)
    return dense2d(params, "dense7", t, 5)


def write(path, records):
    with open(path, "wb") as f:
        for name, t in records:
            t = t.detach().to(torch.float32).contiguous()
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)) + raw)
            f.write(struct.pack("<I", t.dim()))
            f.write(struct.pack("<%dq" % t.dim(), *t.shape))
            f.write(t.numpy().astype("<f4").tobytes())


def make(name, build, input_shape, batch=4, classes=5):
    torch.manual_seed({"mlp": 1, "cnn": 2, "vit": 3, "cnn_wide": 4}[name])
    params, states = {}, {}
    x = torch.rand(batch, *input_shape, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, classes, (batch,))
    logits = build(params, x, states) if name.startswith("cnn") else build(params, x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    records = [("spec", torch.tensor([ord(ch) for ch in SPECS[name]], dtype=torch.float64)),
               ("input", x), ("labels", y.to(torch.float64)), ("logits", logits),
               ("loss", loss.reshape(1))]
    for pname, pt in params.items():
        records.append(("param:" + pname, pt))
        records.append(("grad:" + pname, pt.grad))
    for sname, st in states.items():
        records.append(("state_after:" + sname, st))
    write(os.path.join(OUT, "model_%s.bin" % name), records)
    print("wrote model_%s.bin: %d params, loss %.6f" % (name, len(params), loss.item()))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    make("mlp", mlp, (20,))
    make("cnn", cnn, (2, 8, 8))
    make("vit", vit, (1, 8, 8))
    make("cnn_wide", cnn_wide, (3, 10, 10))
