"""Trains one of bench/torch_models.py's networks on Fashion-MNIST as netc does (pixels scaled
to [0, 1], a fresh shuffle each epoch, the test set evaluated after each epoch) and prints one
JSON line per epoch: seconds (training and evaluation), test accuracy, and the process's peak
resident memory so far and before training (the library, data and network) in MB.

Usage: torch_train.py KIND EPOCHS DATA_DIR [SEED [BATCH]]    (BATCH: the model's unless given)"""
import gzip
import json
import resource
import sys
import time

import numpy as np
import torch
from torch import nn

from torch_models import build

torch.set_num_threads(2)
torch.set_flush_denormal(True)
kind, epochs, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if len(sys.argv) > 4:
    torch.manual_seed(int(sys.argv[4]))


def idx(name, offset):
    with gzip.open(f"{root}/{name}", "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def images(name):
    pixels = idx(name, 16).reshape(-1, 1, 28, 28)
    return torch.tensor(pixels, dtype=torch.float32) / 255


x, y = images("train-images-idx3-ubyte.gz"), torch.tensor(idx("train-labels-idx1-ubyte.gz", 8), dtype=torch.long)
test_x = images("t10k-images-idx3-ubyte.gz")
test_y = torch.tensor(idx("t10k-labels-idx1-ubyte.gz", 8), dtype=torch.long)
net, opt, batch = build(kind)
if len(sys.argv) > 5:
    batch = int(sys.argv[5])
# The library, the data and the network, before any training.
base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
loss = nn.CrossEntropyLoss()
for epoch in range(epochs):
    start = time.perf_counter()
    order = torch.randperm(len(y))
    net.train()
    for i in range(0, len(y), batch):
        rows = order[i:i + batch]
        opt.zero_grad()
        loss(net(x[rows]), y[rows]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        correct = sum(
            int((net(test_x[i:i + batch]).argmax(1) == test_y[i:i + batch]).sum())
            for i in range(0, len(test_y), batch))
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"epoch": epoch + 1, "seconds": seconds, "test_acc": correct / len(test_y),
                      "peak_mb": peak_mb, "base_mb": base_mb}), flush=True)
