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


class Inception(nn.Module):
    """models/googlenet.net's `inception` block (d2l's `Inception`)."""

    def __init__(self, cin, c1, c2a, c2b, c3a, c3b, c4):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c2a, 1), nn.ReLU(),
                                nn.Conv2d(c2a, c2b, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c3a, 1), nn.ReLU(),
                                nn.Conv2d(c3a, c3b, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(cin, c4, 1),
                                nn.ReLU())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class DenseLayer(nn.Module):
    """models/densenet.net's `dense_layer`: d2l's `conv_block`, concatenated to its input."""

    def __init__(self, cin, growth):
        super().__init__()
        self.y = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, padding=1))

    def forward(self, x):
        return torch.cat([x, self.y(x)], dim=1)


def _dense_block(convs, cin, growth):
    return [DenseLayer(cin + i * growth, growth) for i in range(convs)]


def _transition(cin, channels):
    return [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, channels, 1), nn.AvgPool2d(2, stride=2)]


def _nin_block(cin, channels, kernel, padding):
    return [nn.Conv2d(cin, channels, kernel, padding=padding), nn.ReLU(),
            nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU()]


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
    elif kind == "alexnet":
        net = nn.Sequential(
            nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(24, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(), nn.Conv2d(96, 96, 3, padding=1), nn.ReLU(),
            nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2), nn.Flatten(),
            nn.Linear(256, 512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10))
        _init(net, _he)
        nn.init.xavier_uniform_(net[-1].weight)
        return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), 128
    elif kind == "nin":
        net = nn.Sequential(
            *_nin_block(1, 24, 5, 2), nn.MaxPool2d(3, stride=2),
            *_nin_block(24, 64, 5, 2), nn.MaxPool2d(3, stride=2),
            *_nin_block(64, 96, 3, 1), nn.MaxPool2d(3, stride=2), nn.Dropout(0.5),
            *_nin_block(96, 10, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        _init(net, _he)
        return net, torch.optim.Adam(net.parameters(), lr=0.002), 128
    elif kind == "googlenet":
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 48, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            Inception(48, 16, 24, 32, 4, 8, 8), Inception(64, 32, 32, 48, 8, 24, 16),
            nn.MaxPool2d(3, stride=2, padding=1),
            Inception(120, 48, 24, 52, 4, 12, 16), Inception(128, 40, 28, 56, 6, 16, 16),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
        _init(net, lambda m: nn.init.xavier_uniform_(m.weight))
        return net, torch.optim.Adam(net.parameters(), lr=0.002), 128
    elif kind == "densenet":
        net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            *_dense_block(4, 32, 16), *_transition(96, 48),
            *_dense_block(4, 48, 16), *_transition(112, 56),
            *_dense_block(4, 56, 16),
            nn.BatchNorm2d(120), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(120, 10))
        _init(net, lambda m: nn.init.xavier_uniform_(m.weight))
        return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), 128
    else:
        raise SystemExit(f"unknown model {kind}")
    # d2l's softmax regression, MLP (normal(0, 0.01)) and LeNet (Xavier), batch 256.
    if kind == "lenet":
        _init(net, lambda m: nn.init.xavier_uniform_(m.weight))
    else:
        _init(net, lambda m: nn.init.normal_(m.weight, std=0.01))
    lr = 0.9 if kind == "lenet" else 0.1
    return net, torch.optim.SGD(net.parameters(), lr=lr), 256
