"""Trains one of bench/torch_models.py's networks on Fashion-MNIST as netc does (pixels scaled
to [0, 1], a fresh shuffle each epoch, the test set evaluated after each epoch) and prints one
JSON line per epoch: seconds (training and evaluation), test accuracy, and the process's peak
resident memory so far and before training (the library, data and network) in MB.

Usage: torch_train.py KIND EPOCHS DATA_DIR [SEED [BATCH]]    (BATCH: the model's unless given)
With INIT=FILE in the environment, the network starts from the weights of netc's checkpoint
FILE (see `load_netc`) instead of its own initialization."""
import gzip
import json
import os
import re
import resource
import struct
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


def load_netc(net, path):
    """Copies the parameters of a netc checkpoint into `net`'s convolutions and dense layers:
    netc's layers in the order of their names' numbers (`nin_block2.conv2d1` before
    `nin_block10.conv2d1`), which must be the modules' order, shape for shape."""
    raw = open(path, "rb").read()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    names = {k.rsplit(".", 1)[0] for k in header if k != "__metadata__" and not k.startswith("state.")}
    number_order = lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(layers) != len(names):
        raise SystemExit(f"{path}: {len(names)} layers with parameters, the network has {len(layers)}")
    with torch.no_grad():
        for module, name in zip(layers, sorted(names, key=number_order)):
            for part in ["weight", "bias"]:
                entry = header.get(f"{name}.{part}")
                if entry is None or getattr(module, part) is None:
                    raise SystemExit(f"{path}: `{name}.{part}` has no counterpart in {module}")
                start, end = entry["data_offsets"]
                values = np.frombuffer(data[start:end], "<f4").reshape(entry["shape"])
                if tuple(values.shape) != tuple(getattr(module, part).shape):
                    raise SystemExit(f"{path}: `{name}.{part}` is {values.shape}, not {tuple(getattr(module, part).shape)}")
                getattr(module, part).copy_(torch.from_numpy(values.copy()))


net, opt, batch = build(kind)
if os.environ.get("INIT"):
    load_netc(net, os.environ["INIT"])
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
