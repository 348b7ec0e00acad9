#!/usr/bin/python3
"""Reference values and gradients of kiln's losses from PyTorch (tests/test_losses.c reads them).

Inputs are float32 numbers; PyTorch evaluates the losses in float64 on them, so the fixtures hold the
exact answers (rounded once to float32) that kiln's double-accumulated losses are checked against.
Run: /usr/bin/python3 tests/ref/make_loss_fixtures.py   (writes tests/ref/data/losses.{bin,txt})"""

import numpy as np
import torch
import torch.nn.functional as F

from train_fixture_io import FixtureWriter

N, K = 4, 5
rng = np.random.default_rng(20240611)
out = FixtureWriter("losses", "kiln loss fixtures from tests/ref/make_loss_fixtures.py (PyTorch, float64)")


def f32_array(a):
    return np.asarray(a, dtype=np.float32)


def value_and_grad(fn, pred):
    x = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    loss = fn(x)
    loss.backward()
    return loss.item(), x.grad.numpy()


# Logits of ordinary size, and rows with +-100 entries where a naive exp() overflows float32.
ce_inputs = {
    "normal": f32_array(rng.normal(0.0, 2.0, (N, K))),
    "large": f32_array([[100.0, -100.0, 0.5, 99.0, -3.0],
                        [-100.0, -100.0, -100.0, -100.0, -99.5],
                        [0.25, 100.0, -100.0, 1.0, 2.0],
                        [-50.0, 75.0, 100.0, -100.0, 100.0]]),
}
ce_labels = {"normal": np.array([3, 0, 4, 1]), "large": np.array([1, 4, 2, 0])}
for case, logits in ce_inputs.items():
    out.add(f"ce/{case}/logits", logits)
    out.add(f"ce/{case}/labels", ce_labels[case])
    target = torch.tensor(ce_labels[case])
    for reduction in ("mean", "sum"):
        for smoothing in ("0", "0.1"):
            fn = lambda x: F.cross_entropy(x, target, reduction=reduction, label_smoothing=float(np.float32(smoothing)))
            value, grad = value_and_grad(fn, logits)
            out.add(f"ce/{case}/{reduction}/ls{smoothing}/value", [value])
            out.add(f"ce/{case}/{reduction}/ls{smoothing}/grad", grad)

bce_inputs = {
    "normal": f32_array(rng.normal(0.0, 2.0, (N, K))),
    "large": f32_array([[100.0, -100.0, 0.5, 99.0, -3.0],
                        [-100.0, 100.0, -100.0, 100.0, -99.5],
                        [0.25, 100.0, -100.0, 1.0, 2.0],
                        [-50.0, 75.0, 100.0, -100.0, 100.0]]),
}
for case, logits in bce_inputs.items():
    # Hard 0/1 targets mixed with soft ones.
    target = f32_array(np.where(rng.random((N, K)) < 0.5, rng.integers(0, 2, (N, K)), rng.random((N, K))))
    out.add(f"bce/{case}/logits", logits)
    out.add(f"bce/{case}/target", target)
    for reduction in ("mean", "sum"):
        fn = lambda x: F.binary_cross_entropy_with_logits(x, torch.tensor(target, dtype=torch.float64), reduction=reduction)
        value, grad = value_and_grad(fn, logits)
        out.add(f"bce/{case}/{reduction}/value", [value])
        out.add(f"bce/{case}/{reduction}/grad", grad)

pred = f32_array(rng.normal(0.0, 3.0, (N, K)))
target = f32_array(rng.normal(0.0, 3.0, (N, K)))
target[0, 1] = pred[0, 1]  # ties: L1's subgradient there is 0, as torch.sign gives
target[2, 3] = pred[2, 3]
out.add("regression/pred", pred)
out.add("regression/target", target)
for name, fn_of in (("mse", F.mse_loss), ("mae", F.l1_loss)):
    for reduction in ("mean", "sum"):
        fn = lambda x: fn_of(x, torch.tensor(target, dtype=torch.float64), reduction=reduction)
        value, grad = value_and_grad(fn, pred)
        out.add(f"{name}/{reduction}/value", [value])
        out.add(f"{name}/{reduction}/grad", grad)

# Cross-entropy against class probabilities (PyTorch's probability targets): mixup's mixed one-hot rows,
# lambda e_y + (1 - lambda) e_y', one row a pure one-hot, one row mixing a class with itself.
ce_prob_logits = f32_array(rng.normal(0.0, 2.0, (N, K)))
ce_prob_target = np.zeros((N, K))
for i, (a, b, lam) in enumerate([(3, 1, 0.7), (0, 4, 0.15), (2, 2, 0.4), (1, 3, 1.0)]):
    ce_prob_target[i, a] += lam
    ce_prob_target[i, b] += 1.0 - lam
ce_prob_target = f32_array(ce_prob_target)
out.add("ce_prob/logits", ce_prob_logits)
out.add("ce_prob/target", ce_prob_target)
for reduction in ("mean", "sum"):
    for smoothing in ("0", "0.1"):
        fn = lambda x: F.cross_entropy(x, torch.tensor(ce_prob_target, dtype=torch.float64), reduction=reduction,
                                       label_smoothing=float(np.float32(smoothing)))
        value, grad = value_and_grad(fn, ce_prob_logits)
        out.add(f"ce_prob/{reduction}/ls{smoothing}/value", [value])
        out.add(f"ce_prob/{reduction}/ls{smoothing}/grad", grad)

out.write()

