#!/usr/bin/env python3
"""PyTorch side of bench/train_speed.sh: trains the same Fashion-MNIST model as a kiln spec for one
epoch (batch 64, Adam, a fixed thread count) and prints one JSON line with samples/s.

The loop is the one a PyTorch user writes, kept fast: the whole training set as one float tensor in
memory, a fresh random permutation per epoch, slicing per batch (no DataLoader worker overhead).
Usage: /usr/bin/python3 bench/torch_train_speed.py mlp|cnn|vit THREADS [EPOCHS]
"""
import gzip
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn

DATA = "/usr/share/datasets/fashion-mnist"


def load():
    with gzip.open(DATA + "/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(DATA + "/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


class Block(nn.Module):
    """Pre-LN encoder block as kiln's `transformer D HEADS FF` line builds it."""

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
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 64)
        self.pos = nn.Parameter(torch.randn(49, 64) * 0.02)
        self.blocks = nn.Sequential(Block(64, 4, 128), Block(64, 4, 128))
        self.ln = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        n = x.shape[0]
        t = x.reshape(n, 1, 7, 4, 7, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, 49, 16)
        t = self.blocks(self.embed(t) + self.pos)
        return self.head(self.ln(t).mean(dim=1))


def model(name):
    if name == "mlp":  # examples/specs/fmnist_mlp.txt
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    if name == "cnn":  # examples/specs/fmnist_cnn.txt
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return ViT()  # examples/specs/fmnist_vit.txt


def main():
    name, threads = sys.argv[1], int(sys.argv[2])
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x, y = load()
    net = model(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    batch = 64
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        net.train()
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            seen += idx.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"engine": "pytorch " + torch.__version__, "model": name, "threads": threads,
                      "samples_per_second": seen / seconds, "seconds": seconds, "final_loss": loss.item()}))


if __name__ == "__main__":
    main()
