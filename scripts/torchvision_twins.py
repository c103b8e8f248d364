"""PyTorch twins of torchvision's VGG-11/16(-BN), ResNet-18/50 and DenseNet-121, for the known-answer tests.

`scripts/make_torch_fixtures.py` runs them and stores what they compute in `tests/fixtures/torch_twins.npz`,
which the tests read without torch.

Written here from torchvision's documented architectures (layer order, names, padding, pooling), not
copied from its code: the module and attribute names give exactly torchvision's state-dict keys
(`features.<i>`, `classifier.<i>`, `layer<i>.<j>.conv1`, `downsample.0`, `features.denseblock<i>...`).
Each `forward_blocks` returns the per-block activations the flax networks' `backbone.features` return,
then the logits. `width` multiplies channel counts as `tv_layers.scaled` does.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

VGG_CONFIGS = {
  11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def scaled(c: int, width: float) -> int:
  return max(1, round(c * width))


class VGG(nn.Module):
  def __init__(self, depth: int, batch_norm: bool, width: float, num_classes: int):
    super().__init__()
    entries, cin = [], 3
    for v in VGG_CONFIGS[depth]:
      if v == "M":
        entries.append(nn.MaxPool2d(2, 2))
        continue
      cout = scaled(v, width)
      entries.append(nn.Conv2d(cin, cout, 3, padding=1))
      if batch_norm:
        entries.append(nn.BatchNorm2d(cout))
      entries.append(nn.ReLU())
      cin = cout
    self.features = nn.Sequential(*entries)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    fc = scaled(4096, width)
    self.classifier = nn.Sequential(
      nn.Linear(cin * 49, fc),
      nn.ReLU(),
      nn.Dropout(0.5),
      nn.Linear(fc, fc),
      nn.ReLU(),
      nn.Dropout(0.5),
      nn.Linear(fc, num_classes),
    )

  def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for layer in self.features:
      x = layer(x)
      if isinstance(layer, nn.MaxPool2d):
        out.append(x)
    return out + [self.classifier(torch.flatten(self.avgpool(x), 1))]


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = _shortcut(cin, planes, stride)

  def forward(self, x):
    h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = _shortcut(cin, planes * 4, stride)

  def forward(self, x):
    h = F.relu(self.bn1(self.conv1(x)))
    h = F.relu(self.bn2(self.conv2(h)))
    h = self.bn3(self.conv3(h))
    return F.relu(h + (x if self.downsample is None else self.downsample(x)))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
  if stride == 1 and cin == cout:
    return None
  return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
  def __init__(self, depth: int, width: float, num_classes: int):
    super().__init__()
    block, counts = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3))}[depth]
    stem = scaled(64, width)
    self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(stem)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = stem
    for i, n in enumerate(counts):
      planes = scaled(64 * 2**i, width)
      blocks = []
      for j in range(n):
        blocks.append(block(cin, planes, 2 if i > 0 and j == 0 else 1))
        cin = planes * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(cin, num_classes)

  def forward_blocks(self, x):
    out = [self.maxpool(self.relu(self.bn1(self.conv1(x))))]
    for i in range(4):
      for block in getattr(self, f"layer{i + 1}"):
        out.append(block(out[-1]))
    return out + [self.fc(torch.flatten(self.avgpool(out[-1]), 1))]


class DenseLayer(nn.Module):
  def __init__(self, cin: int, growth: int):
    super().__init__()
    self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
    self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
    self.norm2, self.relu2 = nn.BatchNorm2d(4 * growth), nn.ReLU()
    self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

  def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
    h = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
    return self.conv2(self.relu2(self.norm2(h)))


class DenseBlock(nn.ModuleDict):
  def __init__(self, n: int, cin: int, growth: int):
    super().__init__({f"denselayer{j + 1}": DenseLayer(cin + j * growth, growth) for j in range(n)})

  def forward(self, x):
    features = [x]
    for layer in self.values():
      features.append(layer(features))
    return torch.cat(features, 1)


class Transition(nn.Sequential):
  def __init__(self, cin: int, cout: int):
    super().__init__(
      OrderedDict(
        norm=nn.BatchNorm2d(cin), relu=nn.ReLU(), conv=nn.Conv2d(cin, cout, 1, bias=False), pool=nn.AvgPool2d(2, 2)
      )
    )


class DenseNet121(nn.Module):
  def __init__(self, width: float, num_classes: int):
    super().__init__()
    growth, c = scaled(32, width), scaled(64, width)
    entries = OrderedDict(
      conv0=nn.Conv2d(3, c, 7, 2, 3, bias=False), norm0=nn.BatchNorm2d(c), relu0=nn.ReLU(), pool0=nn.MaxPool2d(3, 2, 1)
    )
    for i, n in enumerate((6, 12, 24, 16)):
      entries[f"denseblock{i + 1}"] = DenseBlock(n, c, growth)
      c += n * growth
      if i < 3:
        entries[f"transition{i + 1}"] = Transition(c, c // 2)
        c //= 2
    entries["norm5"] = nn.BatchNorm2d(c)
    self.features = nn.Sequential(entries)
    self.classifier = nn.Linear(c, num_classes)

  def forward_blocks(self, x):
    out = []
    for name, layer in self.features.named_children():
      x = layer(x)
      if name in ("pool0", "transition1", "transition2", "transition3"):
        out.append(x)
    x = F.relu(x)
    out.append(x)
    return out + [self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))]


def build(arch: str, width: float, num_classes: int) -> nn.Module:
  return {
    "vgg11": lambda: VGG(11, False, width, num_classes),
    "vgg16": lambda: VGG(16, False, width, num_classes),
    "vgg16_bn": lambda: VGG(16, True, width, num_classes),
    "resnet18_tv": lambda: ResNet(18, width, num_classes),
    "resnet50": lambda: ResNet(50, width, num_classes),
    "densenet121": lambda: DenseNet121(width, num_classes),
  }[arch]()


def spec(model: nn.Module) -> list[tuple[str, list[int]]]:
  """The names and shapes of the model's state dict, in order."""
  return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def load_numpy(model: nn.Module, state_dict: dict) -> nn.Module:
  """The model holding these numpy arrays (`tests/torch_fixtures.random_state_dict`), in eval mode."""
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  return model.eval()
