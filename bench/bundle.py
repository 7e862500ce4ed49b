"""An exported bundle's network on the CPU: onnxruntime against PyTorch (eager and TorchScript), side by side.

    python -m bench.bundle [--backbone resnet18] [--image-size 224] [--batch 32] [--repeats 5]

Builds the network with random weights (what is measured is the runtime, not the weights), exports it as
the bundle does (ONNX, dynamic batch; TorchScript by tracing) and times one batch in each runtime.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.common import timed
from trainer.config import ModelConfig
from trainer.model.backbones import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(a.threads)
    model, _ = build_model(ModelConfig(backbone=a.backbone, pretrained=False, embedding_dim=128), normalize=True,
                           log=lambda m: None)
    model.eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(a.batch, 3, a.image_size, a.image_size))
                         .astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx = Path(tmp) / "m.onnx"
        torch.onnx.export(model, (x[:2],), str(onnx), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, dynamo=False,
                          opset_version=17)
        script = torch.jit.trace(model, x[:2])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        for f in (lambda: model(x), lambda: script(x), lambda: sess.run(None, {"images": xn})):
            f()  # warm up
        t_eager, ref = timed(lambda: model(x), a.repeats)
        t_script, _ = timed(lambda: script(x), a.repeats)
        t_ort, got = timed(lambda: sess.run(None, {"images": xn}), a.repeats)
    diff = float(np.abs(got[0] - ref.numpy()).max())
    n = a.batch
    print(f"{a.backbone} @ {a.image_size} px, batch {n}, {a.threads} threads, median of {a.repeats}:")
    print(f"  PyTorch eager     {n / t_eager:8.1f} images/s")
    print(f"  TorchScript       {n / t_script:8.1f} images/s   ({t_eager / t_script:.2f}x eager)")
    print(f"  onnxruntime (CPU) {n / t_ort:8.1f} images/s   ({t_eager / t_ort:.2f}x eager); "
          f"max difference {diff:.1e}")


if __name__ == "__main__":
    main()
