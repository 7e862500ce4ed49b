"""The model bundle: a run's network as ONNX and TorchScript, its preprocessing, metric and calibrated threshold.

A bundle is a folder that needs neither the app nor the run::

    bundle.json          what everything below is (format "embedding-explorer-bundle", version 1)
    model.onnx           the embedding network, dynamic batch axis (input "images", output "embeddings")
    model.torchscript.pt the same network for torch.jit.load
    embed.py             embed / verify with onnxruntime, Pillow and NumPy only (trainer/export/runtime.py)
    README.md            the model card: data, recipe, metrics, threshold, date, the run it came from

The threshold is the one saved from the threshold studio for that epoch (``thresholds.json`` in the run), else the
equal-error-rate threshold (or the one at ``--far``) on the run's held-out classes, with its FAR / FRR / TAR and
class-bootstrap intervals, and a coarse ROC so that ``verify --far`` can choose another operating point.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.errors import TrainingError
from trainer.export import runtime
from trainer.store import SPLIT_HELDOUT, RunError, RunReader, refuse_output_in_run

FORMATS = ("onnx", "torchscript")
ROC_POINTS = 400  # the coarse ROC stored in the bundle (for verify --far)
AGREEMENT = 1e-4  # the largest difference an exported network may show against the checkpoint


def choose_epoch(reader: RunReader, epoch: int | str | None) -> int:
    """The epoch to export: one with a checkpoint; "best" by held-out MAP@R, None the last one."""
    held = list(reader.checkpoints)
    if not held:
        raise TrainingError(f"{reader.run_dir} has no checkpoint to export")
    if epoch is None or epoch == "last":
        return held[-1]
    if epoch == "best":
        from trainer.train.handlers import BEST_BY, checkpoints_to_keep

        table = reader.metrics_history()
        values = dict(zip(table["epoch"].tolist(), table.get(BEST_BY, np.full(len(table["epoch"]), np.nan))))
        keep = checkpoints_to_keep({e: {BEST_BY: float(v)} for e, v in values.items()}, held)
        scored = [e for e in keep if math.isfinite(values.get(e, float("nan")))]
        return max(scored, key=lambda e: (values[e], -e)) if scored else held[-1]
    e = int(epoch)
    if e not in held:
        raise TrainingError(f"epoch {e} of {reader.run_dir} has no checkpoint (epochs with one: "
                            f"{', '.join(map(str, held))}); by default only the last and the best are kept")
    return e


def heldout_rows(reader: RunReader, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored embeddings and labels of the run's held-out images at ``epoch``."""
    ids = np.flatnonzero(np.asarray(reader.samples.split) == SPLIT_HELDOUT).astype(np.int64)
    if len(ids) < 2:
        raise TrainingError(f"{reader.run_dir} has {len(ids)} held-out image(s): a threshold needs pairs of "
                            "held-out classes")
    return reader.rows(epoch, ids), np.asarray(reader.samples.labels, np.int64)[ids]


def per_class_spread(x: np.ndarray, labels: np.ndarray, metric: str, threshold: float, class_names=None) -> dict:
    """How one threshold treats each held-out class: the spread of their FAR and FRR, and the worst ones."""
    from trainer.analysis.thresholds import per_class_rates, spread_summary

    return spread_summary(per_class_rates(x, labels, threshold, metric=metric), class_names)


def _opis(x: np.ndarray, labels: np.ndarray, metric: str) -> dict:
    """Threshold consistency over a range of thresholds (OPIS); plain JSON values."""
    from trainer.analysis.thresholds import opis

    return opis(x, labels, metric=metric)


def calibrate(x: np.ndarray, labels: np.ndarray, metric: str, *, far: float | None = None,
              saved: dict | None = None, n_boot: int = 200, class_names=None) -> dict:
    """The threshold on held-out embeddings: ``saved`` (the studio's, :func:`saved_threshold`), else at the
    equal error rate, or the largest with FAR <= ``far``; its rates with 95 % class-bootstrap intervals, the
    per-class spread and the coarse ROC, all from one pass over the pairs."""
    from trainer.analysis import verification
    from trainer.analysis.thresholds import coarsen, rates_ci_at_threshold, snap_threshold, threshold_grid

    bins, hi, _step = threshold_grid(x, metric)
    h = verification.pair_histograms(x, labels, metric=metric, bins=bins,
                                     max_distance=hi if metric == "euclidean" else None)
    if h.n_genuine == 0 or h.n_impostor == 0:
        raise TrainingError("the held-out classes give no genuine or no impostor pair: no threshold can be chosen")
    roc = verification.roc_from_histograms(h)
    if saved is not None and far is None:
        t, rule = snap_threshold(h, saved["value"]), saved["rule"]
    elif far is None:
        t, rule = snap_threshold(h, roc.eer_threshold), "equal error rate (FAR = FRR) on the held-out classes"
    else:
        t, rule = verification.threshold_at_far(h, far), f"largest threshold with FAR <= {far:g} on the held-out classes"
    point = verification.operating_point(h, t)
    ci = rates_ci_at_threshold(x, labels, point["threshold"], metric=metric, n_boot=n_boot)
    edges, gen, imp = coarsen(h, max_bins=ROC_POINTS)
    return {
        "value": point["threshold"], "rule": rule, "far": point["far"], "frr": point["frr"], "tar": point["tar"],
        "far_ci95": [ci["far"]["low"], ci["far"]["high"]], "frr_ci95": [ci["frr"]["low"], ci["frr"]["high"]],
        "n_genuine_pairs": int(h.n_genuine), "n_impostor_pairs": int(h.n_impostor),
        "n_images": int(len(labels)), "n_classes": int(len(np.unique(labels))),
        "per_class": per_class_spread(x, labels, metric, point["threshold"], class_names),
        "opis": _opis(x, labels, metric),
        "roc": roc_table(edges, gen, imp),
    }


def roc_table(edges: np.ndarray, genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """FAR and FRR when accepting d <= edges[k] (pairs in bins below k), as plain lists."""
    ng, ni = max(int(genuine.sum()), 1), max(int(impostor.sum()), 1)
    ga = np.concatenate([[0], np.cumsum(genuine)])[: len(edges)]
    ia = np.concatenate([[0], np.cumsum(impostor)])[: len(edges)]
    return {"threshold": [float(v) for v in edges], "far": [float(v) for v in ia / ni],
            "frr": [float(v) for v in 1 - ga / ng]}


def threshold_at_far_from_table(table: dict, far: float) -> float:
    """The largest stored threshold whose FAR is <= ``far`` (the stored ROC of a bundle)."""
    t, f = np.asarray(table["threshold"]), np.asarray(table["far"])
    ok = np.flatnonzero(f <= far)
    return float(t[ok[-1]]) if len(ok) else float(t[0])


def saved_threshold(reader: RunReader, epoch: int) -> dict | None:
    """The studio's ``thresholds.json`` when it was saved for ``epoch`` of this run with its metric."""
    path = reader.run_dir / "thresholds.json"
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("epoch") != epoch or rec.get("metric") != reader.metric:
        return None
    value = rec.get("threshold")
    return {"value": float(value), "rule": f"saved from the threshold studio ({rec.get('chosen_by', '?')})"} \
        if isinstance(value, (int, float)) and math.isfinite(value) else None


def export_bundle(run_dir: str | Path, out: str | Path, *, epoch: int | str | None = "best",
                  formats: tuple[str, ...] = FORMATS, far: float | None = None,
                  log: Callable[[str], None] = lambda m: None) -> dict:
    """Write the bundle of ``epoch`` of the run in ``run_dir`` into the new folder ``out``; returns bundle.json."""
    import torch

    from trainer.inference import RunModel

    run_dir, out = Path(run_dir), Path(out)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "onnx" not in formats:
        raise ValueError(f"--format: {', '.join(unknown) or 'onnx is required'} (choose from {', '.join(FORMATS)}; "
                         "the bundle's embed.py runs the ONNX network)")
    refuse_output_in_run(out, run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"refusing to write the bundle into {out}: it exists and is not an empty folder")
    reader = RunReader(run_dir)
    e = choose_epoch(reader, epoch)
    rm = RunModel(run_dir, reader.verified_checkpoint(e), "cpu")
    cfg = rm.cfg
    size = int(cfg.data.image_size)
    log(f"exporting epoch {e} of {run_dir} ({cfg.model.backbone}, {size} px, {reader.metric} distance)")
    x, labels = heldout_rows(reader, e)
    # the user's own choice in the studio (when saved for this epoch), with its rates on the held-out pairs
    threshold = calibrate(x, labels, reader.metric, far=far, saved=saved_threshold(reader, e),
                          class_names=reader.classes)
    model = rm.model.to("cpu").eval()
    example = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 3, size, size)).astype(np.float32))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files: dict[str, str] = {}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation notes are not the user's business
            reference = model(example).numpy()
            torch.onnx.export(model, (example,), str(tmp / "model.onnx"), input_names=["images"],
                              output_names=["embeddings"], dynamic_axes={"images": {0: "batch"},
                                                                         "embeddings": {0: "batch"}},
                              dynamo=False, opset_version=17)
            files["onnx"] = "model.onnx"
            if "torchscript" in formats:
                torch.jit.trace(model, example).save(str(tmp / "model.torchscript.pt"))
                files["torchscript"] = "model.torchscript.pt"
        shutil.copyfile(Path(runtime.__file__), tmp / "embed.py")
        from trainer.model.backbones import IMAGENET_MEAN, IMAGENET_STD

        info = {
            "format": runtime.FORMAT, "version": runtime.VERSION,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "files": files,
            "input": {"name": "images", "shape": ["batch", 3, size, size], "dtype": "float32"},
            "output": {"name": "embeddings", "shape": ["batch", int(cfg.model.embedding_dim)]},
            "embedding_dim": int(cfg.model.embedding_dim),
            "normalized": bool(getattr(model, "normalize", True)),
            "metric": reader.metric,
            "distance": "1 - cosine similarity" if reader.metric == "cosine" else "Euclidean distance",
            "preprocessing": {
                "color": "RGB", "image_size": size, "load_size": int(size * 1.15),
                "resize": "shorter side to image_size, bilinear, antialiased; centre crop image_size x image_size",
                "scale": "pixel / 255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "layout": "NCHW",
            },
            "threshold": {**{k: v for k, v in threshold.items() if k != "roc"},
                          "decision": "the same class when distance <= value"},
            "roc": threshold["roc"],
            "classes": list(reader.classes),
            "heldout_classes": sorted({reader.classes[int(c)] for c in np.unique(labels)}),
            "source": {"run": str(run_dir.resolve()), "epoch": e, "checkpoint": rm.checkpoint.name,
                       "metrics": _epoch_metrics(reader, e)},
            "recipe": {"backbone": cfg.model.backbone, "loss": cfg.loss.name, "miner": cfg.loss.miner,
                       "epochs": cfg.optim.epochs, "image_size": size, "batch": [cfg.data.batch_classes,
                                                                                 cfg.data.batch_per_class]},
        }
        (tmp / runtime.MANIFEST).write_text(json.dumps(info, indent=1, allow_nan=False), encoding="utf-8")
        check = _agreement(tmp, example.numpy(), reference)
        info["checked"] = check
        (tmp / runtime.MANIFEST).write_text(json.dumps(info, indent=1, allow_nan=False), encoding="utf-8")
        (tmp / "README.md").write_text(model_card(info), encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out}: threshold {info['threshold']['value']:.4f} ({info['threshold']['rule']}), "
        f"max difference against the checkpoint {max(check.values()):.1e}")
    return info


def _epoch_metrics(reader: RunReader, epoch: int) -> dict:
    table = reader.metrics_history()
    row = int(np.flatnonzero(table["epoch"] == epoch)[0])
    return {k: float(v[row]) for k, v in table.items() if k != "epoch" and k.startswith("heldout/")
            and math.isfinite(float(v[row]))}


def _agreement(folder: Path, x: np.ndarray, reference: np.ndarray) -> dict:
    """Max absolute difference of each exported network against the checkpoint's output on ``x``."""
    out = {"onnxruntime": float(np.abs(runtime.BundleModel(folder).embed_arrays(x) - reference).max())}
    ts = folder / "model.torchscript.pt"
    if ts.exists():
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.jit.load is deprecated": still what TorchScript users load with
            got = torch.jit.load(str(ts)).eval()(torch.from_numpy(x)).numpy()
        out["torchscript"] = float(np.abs(got - reference).max())
    worst = max(out.values())
    if not worst <= AGREEMENT:
        raise TrainingError(f"the exported network differs from the checkpoint by {worst:.2e} (> {AGREEMENT:g}); "
                            "the bundle was not written")
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _spread_text(spread: dict | None) -> str:
    """One threshold for every class: how unevenly it treats the held-out classes (OPIS's question)."""
    if not spread or not spread.get("far") or not spread.get("frr"):
        return ""
    f, r = spread["far"], spread["frr"]
    worst_f = ", ".join(f"{n} {_pct(v)}" for n, v in f["worst"][:3])
    worst_r = ", ".join(f"{n} {_pct(v)}" for n, v in r["worst"][:3])
    return (f"\nPer held-out class at this threshold: FAR {_pct(f['min'])} - {_pct(f['max'])} (standard deviation "
            f"{_pct(f['std'])}; highest: {worst_f}); FRR {_pct(r['min'])} - {_pct(r['max'])} (standard deviation "
            f"{_pct(r['std'])}; highest: {worst_r}).")


def _opis_text(o: dict | None) -> str:
    if not o:
        return ""
    if o.get("opis") is None:
        return f"\nThreshold consistency (OPIS) over FAR 1e-4 - 1e-2: not measured ({o.get('reason') or 'no pairs'})."
    return (f"\nThreshold consistency (OPIS, Zhang et al. 2024; 0 = one threshold means the same for every class): "
            f"{o['opis']:.4f} over the thresholds {o['threshold_range'][0]:.3f} - {o['threshold_range'][1]:.3f} "
            f"(FAR {o['far_range'][0]:.0e} - {o['far_range'][1]:.0e}).")


def model_card(info: dict) -> str:
    """The bundle's README.md."""
    t, src, pre, rec = info["threshold"], info["source"], info["preprocessing"], info["recipe"]
    metrics = "\n".join(f"| {k.split('/', 1)[1]} | {v:.4f} |" for k, v in sorted(src["metrics"].items()))
    return f"""# Embedding model (Embedding Explorer bundle)

Exported {info['created']} from epoch {src['epoch']} of the run `{src['run']}` (checkpoint `{src['checkpoint']}`).

## Use
- `python embed.py verify A.jpg B.jpg` (onnxruntime, Pillow and NumPy only) or, with the app,
  `python main.py verify THIS_FOLDER A.jpg B.jpg`.
- `model.onnx`: input `images` float32 (batch, 3, {pre['image_size']}, {pre['image_size']}), output `embeddings`
  (batch, {info['embedding_dim']}){', L2-normalised' if info['normalized'] else ''}. `model.torchscript.pt`: the same for
  `torch.jit.load`. Both were checked against the checkpoint: max difference {max(info['checked'].values()):.1e}.

## Preprocessing
{pre['color']}; shorter side reduced to {pre['load_size']} px when larger; {pre['resize']}; {pre['scale']};
mean {pre['mean']}, std {pre['std']}; {pre['layout']}.

## Threshold
Two images are the same class when their {info['distance']} is <= **{t['value']:.4f}** ({t['rule']}).
On {t['n_images']:,} images of {t['n_classes']} held-out classes never trained on ({t['n_genuine_pairs']:,} genuine and
{t['n_impostor_pairs']:,} impostor pairs): it accepts {_pct(t['far'])} of impostor pairs (95 % interval
{_pct(t['far_ci95'][0])} - {_pct(t['far_ci95'][1])}) and rejects {_pct(t['frr'])} of genuine pairs
({_pct(t['frr_ci95'][0])} - {_pct(t['frr_ci95'][1])}); TAR {_pct(t['tar'])}. Intervals resample classes.
A different operating point: `python main.py verify THIS_FOLDER A B --far 1e-3` reads the stored ROC.
{_spread_text(t.get('per_class'))}{_opis_text(t.get('opis'))}

## Data and recipe
{len(info['classes'])} classes, of which {len(info['heldout_classes'])} held out. Backbone {rec['backbone']},
loss {rec['loss']} (miner {rec['miner']}), {rec['epochs']} epochs, {rec['image_size']} px, batches of
{rec['batch'][0]} classes x {rec['batch'][1]} images.

| held-out metric (epoch {src['epoch']}) | value |
|---|---|
{metrics}
"""
