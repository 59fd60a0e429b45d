# Shared by bench/compare and bench/contention: sets up PyTorch in target/bench-venv (a large
# download, the first time), builds netc, and defines `netc_epoch MODEL_FILE` and
# `torch_epoch KIND` (softmax, mlp, lenet, alexnet, vgg, nin, googlenet, resnet or densenet:
# the networks of bench/torch_models.py), each printing the median seconds per epoch of the
# epochs after the first, for `$epochs` epochs on Fashion-MNIST with 2 threads.
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
    # Median epoch time of the epochs after the first, from bench/torch_train.py's JSON lines.
    "$venv/bin/python" bench/torch_train.py "$1" "$epochs" "$data" | python3 -c '
import json, statistics, sys
print(statistics.median([json.loads(line)["seconds"] for line in sys.stdin][1:]))'
}
