#!/usr/bin/python3
"""Reference distillation loss and gradient from PyTorch (tests/test_distill.c reads them).

The soft term of Hinton et al.'s loss as PyTorch users write it:
    F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="batchmean") * T * T
in float64 on float32 inputs, with its gradient with respect to the student's logits zs.
Run: /usr/bin/python3 tests/ref/make_distill_fixture.py   (writes tests/ref/data/distill.txt)"""

import os

import numpy as np
import torch
import torch.nn.functional as F

rng = np.random.default_rng(7)
lines = ["# kiln distillation fixture from tests/ref/make_distill_fixture.py: per case 'T n c', zs, zt, loss, grad"]
for T, n, c, spread in [(1.0, 3, 4, 2.0), (4.0, 5, 10, 6.0), (2.5, 2, 3, 40.0)]:
    zs = rng.normal(0, spread, (n, c)).astype(np.float32)
    zt = rng.normal(0, spread, (n, c)).astype(np.float32)
    x = torch.tensor(zs, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(zt, dtype=torch.float64)
    loss = F.kl_div(F.log_softmax(x / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    loss.backward()
    lines.append(f"{T!r} {n} {c}")
    lines.append(" ".join(repr(float(v)) for v in zs.ravel()))
    lines.append(" ".join(repr(float(v)) for v in zt.ravel()))
    lines.append(repr(loss.item()))
    lines.append(" ".join(repr(float(v)) for v in x.grad.numpy().ravel()))
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "distill.txt")
with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
print("wrote", path)
