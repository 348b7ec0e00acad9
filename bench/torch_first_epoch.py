#!/usr/bin/env python3
"""PyTorch side of bench/first_epoch.sh: first-epoch test accuracy of the Fashion-MNIST MLP
(examples/specs/fmnist_mlp.txt) with Adam at its default rate, batch 64, one epoch, PyTorch's default
initialisation from torch.manual_seed(SEED), pixels / 255 (as kiln reads IDX). Prints one line per seed.

  --kiln-order        visit the samples in kiln's order for SEED (kn_batcher_init's seeded Fisher-Yates
                      over src/core/rng.h's SplitMix64, epoch 0) instead of torch.randperm
  --export-init DIR   write the untrained network of each seed as DIR/torch_init<SEED>.onnx (for
                      `kiln train --model`, so kiln starts from PyTorch's initialisation) and train nothing

Usage: /usr/bin/python3 bench/torch_first_epoch.py SEED... [--kiln-order] [--export-init DIR] [--threads N]
"""
import argparse
import gzip

import numpy as np
import torch
import torch.nn as nn

DATA = "/usr/share/datasets/fashion-mnist"
MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def load(part):
    with gzip.open(f"{DATA}/{part}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(f"{DATA}/{part}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def mix64(x):  # kn_mix64
    x = (x + GOLDEN) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def kiln_order(seed, epoch, n):
    """kn_batcher_init: Fisher-Yates from the end with kn_rng_below (rejection, no modulo bias)."""
    state = mix64(mix64(seed) ^ epoch)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        limit = MASK - MASK % (i + 1)
        while True:
            state = (state + GOLDEN) & MASK
            x = mix64(state)
            if x < limit:
                break
        j = x % (i + 1)
        order[i], order[j] = order[j], order[i]
    return torch.tensor(order, dtype=torch.int64)


def network(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--kiln-order", action="store_true")
    parser.add_argument("--export-init")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.export_init:
        for seed in args.seeds:
            torch.onnx.export(network(seed), torch.zeros(1, 784), f"{args.export_init}/torch_init{seed}.onnx",
                              input_names=["input"], output_names=["logits"], opset_version=13,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        return
    x, y = load("train")
    xt, yt = load("t10k")
    for seed in args.seeds:
        net = network(seed)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        perm = kiln_order(seed, 0, len(x)) if args.kiln_order else torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            accuracy = (net(xt).argmax(1) == yt).float().mean().item()
        print(f"seed {seed}: test accuracy {accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
