"""Use an exported model bundle with onnxruntime, Pillow and NumPy only: no PyTorch, no Embedding Explorer.

    pip install onnxruntime pillow numpy
    python docs/use_a_bundle.py BUNDLE_FOLDER IMAGE_A IMAGE_B [IMAGE ...]

Embeds the images with the bundle's ONNX network, prints the distance of each image to the first one and the
decision at the bundle's calibrated threshold, with what that threshold means on the held-out classes.
(CI runs this in an environment from which torch has been uninstalled.)
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main(folder: str, images: list[str]) -> None:
    folder = Path(folder)
    info = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    sys.path.insert(0, str(folder))
    from embed import load_rgb, preprocess  # the bundle's own preprocessing (Pillow + NumPy), stated in bundle.json

    session = ort.InferenceSession(str(folder / info["files"]["onnx"]), providers=["CPUExecutionProvider"])
    x = np.stack([preprocess(load_rgb(p), info["preprocessing"]) for p in images])
    emb = session.run(None, {info["input"]["name"]: x})[0].astype(np.float64)
    if info["metric"] == "cosine":
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        d = 1.0 - unit @ unit[0]
    else:
        d = np.linalg.norm(emb - emb[0], axis=1)
    t = info["threshold"]
    print(f"threshold {t['value']:.4f} ({t['rule']}): on the held-out classes it accepts {100 * t['far']:.2f} % "
          f"of impostor pairs and rejects {100 * t['frr']:.2f} % of genuine ones")
    for path, dist in zip(images[1:], d[1:]):
        print(f"{'same    ' if dist <= t['value'] else 'not same'}  distance {dist:.4f}  {images[0]} ~ {path}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
