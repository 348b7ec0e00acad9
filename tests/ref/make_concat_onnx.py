#!/usr/bin/env python3
"""A small PyTorch CNN with a channel Concat, exported to ONNX: the fixture for structured pruning
through Concat (tests/test_prune.c).

    x (N, 3, 8, 8) -+- conv_a 3x3 (6) - BatchNorm - ReLU ------------+
                    +- conv_b 1x1 (4) - ReLU ------------------------+- Concat (6 + 4 + 3 = 13)
                    +- x itself (3 channels no pruning can touch) ---+      |
                    BatchNorm(13) - ReLU - conv_c 3x3 (5) - ReLU - GlobalAveragePool - Flatten - Linear(5 -> 3)

The BatchNorm after the Concat cannot be folded into a convolution, so it stays a BatchNormalization
node (the one after conv_a is folded by the export); its statistics and affine parameters are drawn
at random so that slicing it matters. Weights from torch.manual_seed(7); opset 13, dynamic batch.

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/make_concat_onnx.py tests/ref/data/concat_branches.onnx
"""
import sys

import torch
import torch.nn as nn


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 6, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(6)
        self.conv_b = nn.Conv2d(3, 4, 1)
        self.bn_cat = nn.BatchNorm2d(13)
        self.conv_c = nn.Conv2d(13, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = torch.relu(self.bn_a(self.conv_a(x)))
        b = torch.relu(self.conv_b(x))
        y = torch.relu(self.bn_cat(torch.cat([a, b, x], dim=1)))
        y = torch.relu(self.conv_c(y))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def main(path):
    torch.manual_seed(7)
    net = Branches()
    with torch.no_grad():
        for bn in (net.bn_a, net.bn_cat):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    net.eval()
    torch.onnx.export(net, torch.rand(1, 3, 8, 8), path, opset_version=13, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_concat_onnx.py OUT.onnx")
    main(sys.argv[1])
