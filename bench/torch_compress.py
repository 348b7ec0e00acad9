#!/usr/bin/env python3
"""PyTorch beside kiln in bench/compress.sh: the same trained Fashion-MNIST CNN (examples/specs/fmnist_cnn.txt;
its weights read from kiln's ONNX export of the model), compressed the way a PyTorch user would.

  float   the model as read: its accuracy must match kiln's (the check that both sides hold one model)
  ptq     static post-training quantization (torch.ao.quantization, eager mode): Conv+BN+ReLU and
          Linear+ReLU fused, per-channel int8 weights, int8 activations, calibrated on the first N training
          images (kiln's --calib-samples takes the same). Debian's PyTorch has no fbgemm engine; 'onednn' is
          the x86 engine it ships, with the same default qconfig family (per-channel weights, histogram
          activation observer).
  prune   torch.nn.utils.prune.global_unstructured, L1, over every Conv and Linear weight at --amount, then
          --epochs of fine-tuning (Adam at --lr with a cosine decay to 0 over the steps, batch 64: what
          bench/compress.sh gives kiln prune; the masks stay), then prune.remove.
Prints one JSON line per result: {"method", "accuracy", "file_bytes", "seconds"}; file_bytes is the size of
the saved state_dict (torch.save), the form a PyTorch user ships.
Usage: /usr/bin/python3 bench/torch_compress.py MODEL.onnx float|ptq|prune [--amount A] [--epochs E]
       [--lr LR] [--calib N] [--threads T]
"""
import argparse
import gzip
import io
import json
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from onnx import numpy_helper

DATA = "/usr/share/datasets/fashion-mnist"


def load(split):
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(f"{DATA}/{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(f"{DATA}/{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


class Cnn(nn.Module):
    """examples/specs/fmnist_cnn.txt, with quantization stubs (identities until converted)."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc1, self.relu3, self.fc2 = nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)

    def forward(self, x):
        x = self.quant(x)
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.fc1(self.drop(torch.flatten(x, 1))))
        return self.dequant(self.fc2(x))


def from_onnx(path):
    """The CNN with the weights of kiln's export: Conv, BatchNormalization and Gemm nodes in order."""
    graph = onnx.load(path).graph
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    net = Cnn()
    convs, bns, fcs = [net.conv1, net.conv2], [net.bn1, net.bn2], [net.fc1, net.fc2]
    for node in graph.node:
        w = [weights[i] for i in node.input[1:] if i in weights]
        if node.op_type == "Conv":
            conv = convs.pop(0)
            conv.weight.data.copy_(w[0]), conv.bias.data.copy_(w[1])
        elif node.op_type == "BatchNormalization":
            bn = bns.pop(0)
            bn.weight.data.copy_(w[0]), bn.bias.data.copy_(w[1])
            bn.running_mean.copy_(w[2]), bn.running_var.copy_(w[3])
        elif node.op_type == "Gemm":
            assert any(a.name == "transB" and a.i == 1 for a in node.attribute)
            fc = fcs.pop(0)
            fc.weight.data.copy_(w[0]), fc.bias.data.copy_(w[1])
    assert not convs and not bns and not fcs, "the ONNX file is not examples/specs/fmnist_cnn.txt"
    return net


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        return float(sum((net(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum() for i in range(0, len(x), 1000))) / len(x)


def state_bytes(net):
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return len(buf.getvalue())


def ptq(net, train_x, calib):
    torch.backends.quantized.engine = "onednn"
    net.eval()
    net = torch.ao.quantization.fuse_modules(net, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"],
                                                   ["fc1", "relu3"]])
    net.qconfig = torch.ao.quantization.get_default_qconfig("onednn")
    torch.ao.quantization.prepare(net, inplace=True)
    with torch.no_grad():
        for i in range(0, calib, 64):
            net(train_x[i:min(i + 64, calib)])
    return torch.ao.quantization.convert(net)


def prune_and_finetune(net, train_x, train_y, amount, epochs, lr):
    params = [(m, "weight") for m in (net.conv1, net.conv2, net.fc1, net.fc2)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(train_x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(1)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(train_x))
        for i in range(0, len(train_x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss_fn(net(train_x[idx]), train_y[idx]).backward()
            opt.step()
            schedule.step()
    for m, name in params:
        prune.remove(m, name)
    return net


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("method", choices=["float", "ptq", "prune"])
    p.add_argument("--amount", type=float, default=0.9)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    train_x, train_y = load("train")
    test_x, test_y = load("test")
    net = from_onnx(a.model)
    start = time.time()
    if a.method == "ptq":
        net = ptq(net, train_x, a.calib)
    elif a.method == "prune":
        net = prune_and_finetune(net, train_x, train_y, a.amount, a.epochs, a.lr)
    seconds = time.time() - start
    zeros = sum(int((m.weight == 0).sum()) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    print(json.dumps({"method": a.method, "accuracy": accuracy(net, test_x, test_y), "file_bytes": state_bytes(net),
                      "zero_weights": zeros, "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
