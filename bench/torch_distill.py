#!/usr/bin/env python3
"""PyTorch beside `kiln distill` in bench/compress.sh: the same trained Fashion-MNIST CNN as the teacher (its
weights read from kiln's ONNX export, bench/torch_compress.py), and a student with a quarter of its channels
(conv 8, conv 16, dense 32) trained alone and distilled, with the same recipe as kiln's: Adam at --lr, batch 64,
--epochs, the learning rate constant or decayed by a cosine to 0 over the steps (--schedule), and the loss

    (1 - alpha) * cross_entropy(z_s, y) + alpha * T^2 * kl_div(log_softmax(z_s / T), softmax(z_t / T), 'batchmean')

(Hinton et al. 2015; alpha weights the soft term). The teacher is in eval mode (BatchNorm running statistics,
no dropout) and sees each batch as the student does. Without augmentation its logits are computed once for the
training set; with --augment (kiln's `--augment`: shift:N moves each image by up to N pixels along each axis with
0 filling in, flip mirrors it left to right half of the time, a new view per sample per step) the teacher labels
each augmented batch, the view the student trains on. The views are drawn by torch's generator, not kiln's.
Accuracy on the 10,000 test images.
Prints one JSON line per run: {"seed", "mode": "alone"|"distilled", "accuracy", "seconds"}, then a summary line
{"alone_mean", "alone_spread", "distilled_mean", "distilled_spread", "gain"} (spread = max - min over the seeds).
Usage: /usr/bin/python3 bench/torch_distill.py TEACHER.onnx [--epochs E] [--temperature T] [--alpha A]
       [--seeds 1,2,3] [--lr LR] [--schedule constant|cosine] [--modes alone,distilled] [--threads N]
       [--train-count N] [--augment shift:N,flip]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_compress import accuracy, from_onnx, load  # noqa: E402


class Student(nn.Module):
    """examples/specs/fmnist_cnn.txt with a quarter of the channels (bench/compress.sh's student.txt)."""

    def __init__(self, c1=8, c2=16, hidden=32):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2)
        self.drop = nn.Dropout(0.25)
        self.fc1, self.fc2 = nn.Linear(c2 * 7 * 7, hidden), nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(self.drop(torch.flatten(x, 1)))))


def teacher_logits(teacher, x):
    teacher.eval()
    with torch.no_grad():
        return torch.cat([teacher(x[i:i + 1000]) for i in range(0, len(x), 1000)])


def parse_augment(text):
    """(shift, flip) from kiln's --augment text."""
    shift, flip = 0, False
    for part in filter(None, (text or "none").split(",")):
        if part == "flip":
            flip = True
        elif part.startswith("shift:"):
            shift = int(part[6:])
        elif part != "none":
            raise SystemExit(f"--augment {text}: '{part}' is not shift:N or flip")
    return shift, flip


def augment(x, shift, flip):
    """x (B, C, H, W) in random views: mirrored left to right with probability 1/2, then moved by up to `shift`
    pixels along each axis with 0 filling in (pad by `shift`, crop at a random offset)."""
    if flip:
        mirrored = torch.rand(len(x)) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    if shift:
        b, _, h, w = x.shape
        padded = F.pad(x, (shift, shift, shift, shift))
        rows = torch.randint(0, 2 * shift + 1, (b, 1)) + torch.arange(h)  # (B, H)
        cols = torch.randint(0, 2 * shift + 1, (b, 1)) + torch.arange(w)  # (B, W)
        x = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return x


def train(seed, train_x, train_y, soft, a, teacher=None):
    """soft: the teacher's logits for train_x, or None to train alone; with --augment, `teacher` labels each
    augmented batch instead (and soft only says whether to distill)."""
    torch.manual_seed(seed)
    net = Student()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    steps = a.epochs * ((len(train_x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if a.schedule == "cosine" else None
    t = a.temperature
    for _ in range(a.epochs):
        net.train()
        order = torch.randperm(len(train_x))
        for i in range(0, len(train_x), 64):
            idx = order[i:i + 64]
            x = train_x[idx]
            if a.shift or a.flip:
                x = augment(x, a.shift, a.flip)
            z = net(x)
            loss = F.cross_entropy(z, train_y[idx])
            if soft is not None:
                if a.shift or a.flip:
                    with torch.no_grad():
                        zt = teacher(x)
                else:
                    zt = soft[idx]
                kl = F.kl_div(F.log_softmax(z / t, 1), F.softmax(zt / t, 1), reduction="batchmean")
                loss = (1 - a.alpha) * loss + a.alpha * t * t * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            if schedule:
                schedule.step()
    return net


def main():
    p = argparse.ArgumentParser()
    p.add_argument("teacher")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--temperature", type=float, default=4)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--modes", default="alone,distilled")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-count", type=int, default=0, help="train on the first N training images (0: all)")
    p.add_argument("--augment", default="none", help="shift:N, flip or shift:N,flip (as kiln's --augment)")
    a = p.parse_args()
    a.shift, a.flip = parse_augment(a.augment)
    torch.set_num_threads(a.threads)
    train_x, train_y = load("train")
    if a.train_count:
        train_x, train_y = train_x[:a.train_count], train_y[:a.train_count]
    test_x, test_y = load("test")
    teacher = from_onnx(a.teacher)
    soft = teacher_logits(teacher, train_x)
    print(json.dumps({"teacher_accuracy": accuracy(teacher, test_x, test_y)}), flush=True)
    results = {"alone": [], "distilled": []}
    for seed in [int(s) for s in a.seeds.split(",")]:
        for mode in a.modes.split(","):
            start = time.time()
            net = train(seed, train_x, train_y, soft if mode == "distilled" else None, a, teacher)
            acc = accuracy(net, test_x, test_y)
            results[mode].append(acc)
            print(json.dumps({"seed": seed, "mode": mode, "accuracy": acc, "seconds": round(time.time() - start, 1)}),
                  flush=True)
    summary = {}
    for mode, accs in results.items():
        if accs:
            summary[f"{mode}_mean"] = round(sum(accs) / len(accs), 4)
            summary[f"{mode}_spread"] = round(max(accs) - min(accs), 4)
    if results["alone"] and results["distilled"]:
        summary["gain"] = round(summary["distilled_mean"] - summary["alone_mean"], 4)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
