"""models/mlp.net trained by torch.optim, as netc trains it with the same optimizer, schedule
and clipping, for bench/optimizers.

Usage: torch_optim.py SPEC EPOCHS DATA_DIR same INIT FINAL
       torch_optim.py SPEC EPOCHS DATA_DIR train SEED

SPEC is JSON: {"optimizer": "adamw", "args": {"lr": 0.001, ...}, "schedule": "cosine",
"schedule_args": {...}, "batch": 256}, with netc's names and netc's defaults filled in.

`same` starts from netc's checkpoint INIT, takes the training images in file order (netc with
`shuffle: false`) and prints each step's loss and the difference from netc's checkpoint FINAL:
the largest, absolute and relative to the largest weight, and the share of weights within
1e-5 of the largest weight. `train` starts from PyTorch's own initialization of the same
distribution (normal(0, 0.01), zero biases), shuffles, and prints the test accuracy per epoch."""
import gzip
import json
import struct
import sys

import numpy as np
import torch
from torch import nn

torch.set_num_threads(2)
spec, epochs, root, mode = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


def idx(name, offset):
    with gzip.open(f"{root}/{name}", "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def images(name):
    return torch.tensor(idx(name, 16).reshape(-1, 784), dtype=torch.float32) / 255


def labels(name):
    return torch.tensor(idx(name, 8), dtype=torch.long)


def read_safetensors(path):
    """A netc checkpoint's tensors by name (safetensors: a JSON header, then raw data)."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[start:end], np.float32).reshape(info["shape"])
    return out


x, y = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
test_x, test_y = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
layers = {"dense1": net[0], "dense2": net[2]}
if mode == "same":
    # netc's dense weight is [in, out] (x @ w); PyTorch's is [out, in].
    init = read_safetensors(sys.argv[5])
    with torch.no_grad():
        for name, layer in layers.items():
            layer.weight.copy_(torch.tensor(init[f"{name}.weight"].T.copy()))
            layer.bias.copy_(torch.tensor(init[f"{name}.bias"].copy()))
else:
    torch.manual_seed(int(sys.argv[5]))
    for layer in layers.values():
        nn.init.normal_(layer.weight, 0, 0.01)
        nn.init.zeros_(layer.bias)

a = spec["args"]
wd = a.get("weight_decay", 0.0)
name = spec["optimizer"]
params = net.parameters()
if name == "sgd":
    opt = torch.optim.SGD(params, lr=a["lr"], momentum=a.get("momentum", 0.0),
                          nesterov=a.get("nesterov", False), weight_decay=wd)
elif name in ("adam", "adamw"):
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    opt = kind(params, lr=a.get("lr", 0.001), betas=(a.get("beta1", 0.9), a.get("beta2", 0.999)),
               eps=a.get("eps", 1e-8), weight_decay=a.get("weight_decay", 0.0 if name == "adam" else 0.01))
elif name == "adagrad":
    opt = torch.optim.Adagrad(params, lr=a.get("lr", 0.01), eps=a.get("eps", 1e-10), weight_decay=wd)
elif name == "rmsprop":
    opt = torch.optim.RMSprop(params, lr=a.get("lr", 0.01), alpha=a.get("alpha", 0.99),
                              eps=a.get("eps", 1e-8), momentum=a.get("momentum", 0.0), weight_decay=wd)
elif name == "adadelta":
    opt = torch.optim.Adadelta(params, lr=a.get("lr", 1.0), rho=a.get("rho", 0.9),
                               eps=a.get("eps", 1e-6), weight_decay=wd)
else:
    sys.exit(f"unknown optimizer {name}")

# netc's schedules are functions of the step, so PyTorch's schedulers step once per batch.
batch = spec["batch"]
per_epoch = -(-len(y) // batch)
s = spec.get("schedule_args", {})
schedule = spec.get("schedule", "constant")
if schedule == "constant":
    scheduler = None
elif schedule == "step":
    scheduler = torch.optim.lr_scheduler.StepLR(opt, s["every"] * per_epoch, s.get("factor", 0.1))
elif schedule == "multifactor":
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        opt, [m * per_epoch for m in s["at"]], s.get("factor", 0.1))
elif schedule == "cosine":
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, s.get("epochs", epochs) * per_epoch, s.get("final_lr", 0.0))
else:
    sys.exit(f"no PyTorch twin for schedule {schedule}")
clip = a.get("clip")

loss = nn.CrossEntropyLoss()
losses = []
for epoch in range(epochs):
    order = torch.arange(len(y)) if mode == "same" else torch.randperm(len(y))
    net.train()
    for i in range(0, len(y), batch):
        rows = order[i:i + batch]
        opt.zero_grad()
        value = loss(net(x[rows]), y[rows])
        value.backward()
        losses.append(value.item())
        if clip is not None:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        if scheduler is not None:
            scheduler.step()
    if mode == "train":
        with torch.no_grad():
            correct = int((net(test_x).argmax(1) == test_y).sum())
        print(json.dumps({"epoch": epoch + 1, "test_acc": correct / len(test_y)}), flush=True)

if mode == "same":
    final = read_safetensors(sys.argv[6])
    ours, theirs = [], []
    for name, layer in layers.items():
        for part, value in (("weight", layer.weight.detach().numpy().T), ("bias", layer.bias.detach().numpy())):
            ours.append(value.ravel())
            theirs.append(final[f"{name}.{part}"].ravel())
    diff = np.abs(np.concatenate(ours) - np.concatenate(theirs))
    largest = float(np.abs(np.concatenate(theirs)).max())
    print(json.dumps({"max_abs_diff": float(diff.max()), "relative": float(diff.max()) / largest,
                      "close": float((diff <= 1e-5 * largest).mean()), "losses": losses}))
