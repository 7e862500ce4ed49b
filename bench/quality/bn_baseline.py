"""What "the untrained network" is worth once BatchNorm has seen the data.

The sweep compares every loss with the untrained network's held-out MAP@R (epoch 0 of the run). A randomly
initialised ResNet evaluated as it is keeps BatchNorm's initial running statistics (mean 0, variance 1), so at
evaluation no layer is normalised. Training changes that before any weight has learned anything: one pass over the
training images in train mode, without a gradient step, replaces those statistics with the data's. This measures
the held-out MAP@R of the random network before and after that refresh (and of its 512-d pooled features), with
plain torchvision + pytorch-metric-learning, so that a loss can be judged against both.

    python -m bench.quality.bn_baseline TASK_DIR [--image-size 48] [--seeds 2]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torchvision
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from torchvision import transforms as T


def _evaluate(net: torch.nn.Module, test) -> float:
    net.eval()
    embs, labels = [], []
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=256):
            embs.append(net(x))
            labels.append(y)
    acc = AccuracyCalculator(include=("mean_average_precision_at_r",), k="max_bin_count")
    return float(acc.get_accuracy(torch.cat(embs), torch.cat(labels), ref_includes_query=True)
                 ["mean_average_precision_at_r"])


def run(task_dir: str, seed: int, image_size: int = 48) -> dict[str, float]:
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tf = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(), norm])
    train = torchvision.datasets.ImageFolder(f"{task_dir}/train", tf)
    test = torchvision.datasets.ImageFolder(f"{task_dir}/test", tf)
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Linear(net.fc.in_features, 128)
    out = {"untrained": _evaluate(net, test)}
    net.train()
    with torch.no_grad():  # BatchNorm's running statistics only: no weight changes
        for x, _ in torch.utils.data.DataLoader(train, batch_size=64, shuffle=True):
            net(x)
    out["bn_refreshed"] = _evaluate(net, test)
    net.fc = torch.nn.Identity()
    out["bn_refreshed_pooled"] = _evaluate(net, test)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task_dir")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--seeds", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for seed in range(a.seeds):
        r = run(a.task_dir, seed, a.image_size)
        print(f"seed {seed}: held-out MAP@R untrained {r['untrained']:.4f}; BatchNorm statistics refreshed on the "
              f"training images {r['bn_refreshed']:.4f}; refreshed, 512-d pooled features "
              f"{r['bn_refreshed_pooled']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
