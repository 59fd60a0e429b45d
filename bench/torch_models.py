"""The networks of bench/compare and bench/parity in PyTorch, each as its netc model file has
it: the same layers, initialization, optimizer and batch size."""
import torch
from torch import nn


def _init(net, weight):
    """Every convolution and dense layer's weight by `weight`, biases zero, as netc does."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            weight(m)
            nn.init.zeros_(m.bias)


def _he(m):
    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


class Residual(nn.Module):
    """models/resnet.net's `residual` block (d2l's `Residual`)."""

    def __init__(self, cin, channels, stride=1, project=False):
        super().__init__()
        self.y = nn.Sequential(
            nn.Conv2d(cin, channels, 3, padding=1, stride=stride), nn.BatchNorm2d(channels),
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.shortcut = nn.Conv2d(cin, channels, 1, stride=stride) if project else nn.Identity()

    def forward(self, x):
        return torch.relu(self.y(x) + self.shortcut(x))


def _stage(cin, channels, stride=2, project=True):
    return [Residual(cin, channels, stride, project), Residual(channels, channels)]


def _vgg_block(convs, cin, channels, pool=True):
    layers = []
    for _ in range(convs):
        layers += [nn.Conv2d(cin, channels, 3, padding=1), nn.ReLU()]
        cin = channels
    return layers + ([nn.MaxPool2d(2)] if pool else [])


def build(kind):
    """(network, optimizer for its parameters, batch size) for a model name."""
    if kind == "softmax":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    elif kind == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    elif kind == "lenet":
        net = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
            nn.Linear(84, 10))
    elif kind == "resnet":
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            *_stage(16, 16, stride=1, project=False), *_stage(16, 32), *_stage(32, 64),
            *_stage(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
        _init(net, lambda m: nn.init.xavier_uniform_(m.weight))
        return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), 128
    elif kind == "vgg":
        net = nn.Sequential(
            *_vgg_block(1, 1, 16), *_vgg_block(1, 16, 32), *_vgg_block(2, 32, 64),
            *_vgg_block(2, 64, 128), *_vgg_block(2, 128, 128, pool=False), nn.Flatten(),
            nn.Linear(128, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))
        _init(net, _he)
        nn.init.xavier_uniform_(net[-1].weight)
        return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), 128
    else:
        raise SystemExit(f"unknown model {kind}")
    # d2l's softmax regression, MLP (normal(0, 0.01)) and LeNet (Xavier), batch 256.
    if kind == "lenet":
        _init(net, lambda m: nn.init.xavier_uniform_(m.weight))
    else:
        _init(net, lambda m: nn.init.normal_(m.weight, std=0.01))
    lr = 0.9 if kind == "lenet" else 0.1
    return net, torch.optim.SGD(net.parameters(), lr=lr), 256
