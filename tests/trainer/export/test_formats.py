"""Embeddings in TensorBoard's projector layout and as Parquet (issue 17 item 5), read back by their readers."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support import ROOT
from trainer.export.formats import SPRITE_LIMIT, sprite_layout, write_parquet, write_projector

pytest.importorskip("pyarrow")


def test_the_sprite_layout_is_the_smallest_square_grid_within_the_projectors_limit():
    for n in (1, 2, 5, 99, 1797, 10_000, 100_000, 1_000_000):
        thumb, per_row = sprite_layout(n)
        brute = next(k for k in range(1, n + 2) if k * k >= n)
        assert per_row == brute and per_row * thumb <= SPRITE_LIMIT and thumb >= 1
        assert thumb == min(64, SPRITE_LIMIT // per_row)


def test_a_projector_folder_loads_as_tensorboard_reads_it(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    rng = np.random.default_rng(0)
    n, d = 7, 5
    x = rng.normal(size=(n, d)).astype(np.float32)
    colours = [tuple(int(v) for v in rng.integers(0, 255, 3)) for _ in range(n)]
    paths = [f"c{i % 2}/img\t{i}.png" for i in range(n)]  # a tab in a name must not break the table
    write_projector(tmp_path / "proj", x, paths, [f"c{i % 2}" for i in range(n)], ["train"] * n,
                    images=lambda i: Image.new("RGB", (30, 20), colours[i]))
    cfg = text_format.Parse((tmp_path / "proj" / "projector_config.pbtxt").read_text(),
                            projector_config_pb2.ProjectorConfig())
    (emb,) = cfg.embeddings
    assert list(emb.tensor_shape) == [n, d] and emb.tensor_path == "tensors.tsv"
    assert emb.metadata_path == "metadata.tsv" and emb.sprite.image_path == "sprite.png"
    back = np.loadtxt(tmp_path / "proj" / "tensors.tsv", delimiter="\t", dtype=np.float32)
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-6)
    meta = (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "path\tlabel\tsplit" and len(meta) == n + 1 and all(len(m.split("\t")) == 3 for m in meta)
    sheet = np.asarray(Image.open(tmp_path / "proj" / "sprite.png").convert("RGB"))
    thumb, per_row = sprite_layout(n)
    assert list(emb.sprite.single_image_dim) == [thumb, thumb]
    assert sheet.shape[1] == per_row * thumb and sheet.shape[0] == math.ceil(n / per_row) * thumb
    for i, c in enumerate(colours):  # the middle of each cell is that image's colour
        r, col = divmod(i, per_row)
        assert tuple(sheet[r * thumb + thumb // 2, col * thumb + thumb // 2]) == c


def test_a_parquet_table_reads_back_with_pyarrow(tmp_path):
    import pyarrow.parquet as pq

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    xy = np.array([[0, 1], [2, 3], [4, 5], [6, 7]], np.float32)
    write_parquet(tmp_path / "e.parquet", x, ["a.png", "b.png", "c.png", "d.png"], ["x", "x", "y", "y"],
                  ["train", "held-out", "train", "held-out"], ids=[10, 11, 12, 13], xy=xy)
    t = pq.read_table(tmp_path / "e.parquet")
    assert t.column_names == ["id", "path", "label", "split", "vector", "x", "y"]
    assert t.column("id").to_pylist() == [10, 11, 12, 13] and t.column("split").to_pylist()[1] == "held-out"
    np.testing.assert_array_equal(np.array(t.column("vector").to_pylist(), np.float32), x)
    np.testing.assert_array_equal(np.stack([t.column("x").to_numpy(), t.column("y").to_numpy()], 1), xy)


def test_embed_writes_the_projector_folder_and_the_parquet_table(trained, tmp_path):
    import pyarrow.parquet as pq

    run_dir, data = trained
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "embed", str(run_dir), str(data), "--out",
                          str(tmp_path / "e.h5"), "--projector", str(tmp_path / "proj"), "--parquet",
                          str(tmp_path / "e.parquet")], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    t = pq.read_table(tmp_path / "e.parquet")
    n = len(list(data.rglob("*.png")))
    assert t.num_rows == n and len(t.column("vector")[0].as_py()) == 16
    assert len((tmp_path / "proj" / "tensors.tsv").read_text().splitlines()) == n
    assert (tmp_path / "proj" / "sprite.png").is_file()

