# Shared by bench/compare and bench/contention: sets up PyTorch in target/bench-venv (a large
# download, the first time), builds netc, and defines `netc_epoch MODEL_FILE` and
# `torch_epoch KIND` (softmax, mlp or lenet), each printing the median seconds per epoch of
# the epochs after the first, for `$epochs` epochs on Fashion-MNIST with 2 threads.
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch numpy
fi
cargo build --locked --release --quiet
data=/usr/share/datasets/fashion-mnist

netc_epoch() {
    # Median epoch time of the epochs after the first, from netc's JSON log.
    local model="$1" log
    log=$(mktemp)
    ./target/release/netc run "$model" --data fmnist --epochs "$epochs" --threads 2 --log "$log" > /dev/null 2>&1
    python3 - "$log" <<'PY'
import json, statistics, sys
times = [json.loads(line)["seconds"] for line in open(sys.argv[1])][1:]
print(statistics.median(times))
PY
    rm -f "$log"
}

torch_epoch() {
    "$venv/bin/python" - "$1" "$epochs" "$data" <<'PY'
import gzip, statistics, sys, time
import numpy as np
import torch
from torch import nn

torch.set_num_threads(2)
torch.set_flush_denormal(True)
kind, epochs, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def idx(name, offset):
    with gzip.open(f"{root}/{name}", "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)

x = torch.tensor(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
y = torch.tensor(idx("train-labels-idx1-ubyte.gz", 8), dtype=torch.long)
test_x = torch.tensor(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
test_y = torch.tensor(idx("t10k-labels-idx1-ubyte.gz", 8), dtype=torch.long)
lr = 0.1
if kind == "softmax":
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
elif kind == "mlp":
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
else:
    lr = 0.9
    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))
for m in net:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        if kind == "lenet":
            nn.init.xavier_uniform_(m.weight)
        else:
            nn.init.normal_(m.weight, std=0.01)
        nn.init.zeros_(m.bias)
opt = torch.optim.SGD(net.parameters(), lr=lr)
loss = nn.CrossEntropyLoss()
times = []
for epoch in range(epochs):
    start = time.perf_counter()
    order = torch.randperm(len(y))
    for i in range(0, len(y), 256):
        rows = order[i:i + 256]
        opt.zero_grad()
        loss(net(x[rows]), y[rows]).backward()
        opt.step()
    # netc evaluates the test set every epoch; so does this loop, in the same batches.
    with torch.no_grad():
        correct = sum(int((net(test_x[i:i + 256]).argmax(1) == test_y[i:i + 256]).sum()) for i in range(0, len(test_y), 256))
    times.append(time.perf_counter() - start)
print(statistics.median(times[1:]))
PY
}

