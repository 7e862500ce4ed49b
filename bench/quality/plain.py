"""The script a practitioner writes instead of using the app: plain PyTorch + pytorch-metric-learning.

ResNet-18 (torchvision) with a linear 128-d head, ArcFace (margin 28.6 degrees, scale 64), Adam at 1e-3 for the
network and the loss's class weights, ``MPerClassSampler`` batches of 64 (16 classes x 4), RandomResizedCrop
(scale 0.8-1) without mirroring, constant learning rate; held-out MAP@R and P@1 from PML's AccuracyCalculator.
Deliberately not tuned beyond what the PML examples show: it is the yardstick, not a competitor we weaken.

    python -m bench.quality.plain TASK_DIR --epochs 4 --seed 0 [--image-size 64] [--backbone resnet18]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torchvision
from pytorch_metric_learning import losses, samplers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from torchvision import transforms as T


def run(task_dir: str, epochs: int, seed: int, image_size: int = 64, backbone: str = "resnet18",
        pretrained: bool = False) -> dict[str, float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = T.Compose([T.RandomResizedCrop(image_size, scale=(0.8, 1.0)), T.ToTensor(), norm])
    test_tf = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(), norm])
    train_ds = torchvision.datasets.ImageFolder(f"{task_dir}/train", train_tf)
    test_ds = torchvision.datasets.ImageFolder(f"{task_dir}/test", test_tf)

    net = torchvision.models.get_model(backbone, weights="DEFAULT" if pretrained else None)
    feat = net.fc.in_features
    net.fc = torch.nn.Linear(feat, 128)
    loss_fn = losses.ArcFaceLoss(len(train_ds.classes), 128, margin=28.6, scale=64)
    opt = torch.optim.Adam(list(net.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    sampler = samplers.MPerClassSampler(train_ds.targets, m=4, batch_size=64, length_before_new_iter=len(train_ds))
    loader = torch.utils.data.DataLoader(train_ds, batch_size=64, sampler=sampler, num_workers=0, drop_last=True)

    for _ in range(epochs):
        net.train()
        for x, y in loader:
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    net.eval()
    embs, labels = [], []
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test_ds, batch_size=256):
            embs.append(net(x))
            labels.append(y)
    emb, lab = torch.cat(embs), torch.cat(labels)
    acc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")
    m = acc.get_accuracy(emb, lab, ref_includes_query=True)
    return {"map_at_r": float(m["mean_average_precision_at_r"]), "p_at_1": float(m["precision_at_1"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task_dir")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--backbone", default="resnet18")
    a = p.parse_args(argv)
    print(json.dumps(run(a.task_dir, a.epochs, a.seed, a.image_size, a.backbone)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
