"""Embedding Explorer: open the desktop app, or run the trainer headless.

    python main.py                      the app, on its start page
    python main.py --demo               the app on the built-in demo (handwritten digits)
    python main.py FOLDER | RUN_DIR     the app on an image folder or a run
    python main.py train DATA_DIR --out RUN_DIR [options]   (--dry-run: the recipe and the time per epoch)
    python main.py lr-find DATA_DIR [options]
    python main.py sweep DATA_DIR --losses a,b,... --seeds N --epochs E --out DIR [options]
    python main.py embed RUN_DIR IMAGE_DIR --out FILE.h5
    python main.py evaluate RUN_DIR [--data DIR] [--json]
    python main.py losses
    python main.py export RUN_DIR --out BUNDLE [--epoch E|best|last] [--far F]
    python main.py verify BUNDLE_OR_RUN IMAGE_A IMAGE_B [--far F] [--pairs FILE.csv --out FILE.csv]
    python main.py search BUNDLE_OR_RUN QUERY... --gallery DIR|FILE.h5 [-k K]
    python main.py compare RUN_OR_SWEEP... [--json] [--images N]
    python main.py --compare RUN_OR_SWEEP...     (the same in the window, with the maps side by side)

This file only parses the command line; the work is in ``trainer/`` (headless) and ``explorer/`` (the GUI).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

COMMANDS = ("train", "lr-find", "sweep", "embed", "evaluate", "losses", "export", "verify", "search", "compare")


# ----------------------------------------------------------------------------- parsers
def _app_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="embedding-explorer",
        description="Deep metric learning on your own image folders: train a backbone with a metric-learning loss, "
        "watch the embedding space form (UMAP map, nearest neighbours, easy / semi-hard / hard triplets) and pick a "
        "verification threshold. Headless commands: " + ", ".join(COMMANDS) + " (`main.py COMMAND --help`).",
        epilog="Headless: main.py train DATA_DIR --out RUN_DIR | embed RUN_DIR IMAGE_DIR --out FILE.h5 | "
        "evaluate RUN_DIR | losses",
    )
    p.add_argument("path", nargs="?", help="an image folder (one sub-folder per class) or a run directory to open")
    p.add_argument("--demo", action="store_true", help="open the built-in demo (scikit-learn's handwritten digits)")
    p.add_argument("--run", metavar="RUN_DIR", help="open a run directory (also one the command line is writing)")
    p.add_argument("--compare", nargs="+", metavar="RUN_OR_SWEEP",
                   help="open these runs (or every run of a sweep folder) side by side in Compare runs")
    return p


def _loss_param_names() -> dict[str, list[tuple[str, object, str]]]:
    """param name -> [(loss name, default, help)] over every loss, for the generated --<param> options."""
    from trainer.model.losses import LOSSES

    out: dict[str, list[tuple[str, object, str]]] = {}
    for name, spec in LOSSES.items():
        for prm in spec.params:
            out.setdefault(prm.name, []).append((name, prm.default, prm.help))
    return out


def _train_parser() -> argparse.ArgumentParser:
    from trainer.config import PRESET_IDS, PRESETS, TrainConfig
    from trainer.model.losses import LOSSES, MINERS
    from trainer.model.backbone_specs import BACKBONES

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="main.py train", description="Train a backbone with a metric-learning loss on "
                                "an image folder (one sub-folder per class); writes a run directory the app opens.")
    p.add_argument("data_dir", help="image folder, one sub-folder per class")
    p.add_argument("--out", required=True, help="run directory to write (or to continue with --resume)")
    p.add_argument("--dry-run", action="store_true",
                   help="scan the folder, print the recipe with the reason for each setting and the estimated time "
                        "per epoch, and stop (nothing is written)")
    p.add_argument("--preset", choices=[*PRESET_IDS, *sorted(PRESETS)], metavar="{" + ",".join(PRESET_IDS) + "}",
                   help="start from a named preset; other options override it")
    p.add_argument("--loss", choices=sorted(LOSSES), help="metric-learning loss (default: the recipe's; `train --dry-run` shows it)")
    p.add_argument("--miner", choices=sorted(MINERS), help="tuple miner (default: the loss's usual miner)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), help="backbone (default: the recipe's: ResNet-18 with trained weights or a GPU, the small CNN on a CPU "
                   "without them)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", dest="pretrained", action="store_true", default=None,
                   help="ImageNet weights through torchvision (default; offline: random init, said in the log)")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random initialisation")
    p.add_argument("--weights-file", help="local torchvision state_dict (.pth) for the backbone")
    p.add_argument("--head-only", action="store_true", default=None,
                   help="freeze the backbone, cache its features once and train only the embedding head (fast on CPU)")
    p.add_argument("--freeze-backbone-epochs", type=int, help="train only the head for the first N epochs")
    p.add_argument("--epochs", type=int, help=f"epochs (default {d.optim.epochs})")
    p.add_argument("--embedding-dim", type=int, help="embedding dimension D (default: the recipe's)")
    p.add_argument("--head-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm in the embedding head (default: the recipe's)")
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the recipe's, from the weights and the images' size)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None, help="no augmentation")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="augment without left-right mirroring (for digits, letters, text: mirroring changes them)")
    p.add_argument("--crop-scale", type=float, help="smallest share of the image a training crop keeps (default: "
                                                    "the recipe's)")
    p.add_argument("--batch-classes", type=int, help="C: classes per batch (default: the recipe's)")
    p.add_argument("--batch-per-class", type=int, help="K: images per class (default: the recipe's)")
    p.add_argument("--batches-per-epoch", type=int, help="batches per epoch (default: one pass over the images)")
    p.add_argument("--lr", type=float, help="backbone learning rate (default: the recipe's; `lr-find` suggests one)")
    p.add_argument("--head-lr-mult", type=float, help="embedding head's learning rate over --lr (default: 10 when "
                                                      "trained weights loaded, 1 from random weights)")
    p.add_argument("--loss-lr", type=float, help="learning rate of proxies / classifier weights "
                                                 "(default: the recipe's)")
    p.add_argument("--test-dir", help="explicit held-out image folder (default: a class-disjoint split)")
    p.add_argument("--holdout-fraction", type=float, help=f"share of classes held out (default "
                                                          f"{d.data.holdout_fraction})")
    p.add_argument("--holdout-classes", help="comma-separated held-out class names")
    p.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], help="mixed precision (default auto)")
    p.add_argument("--workers", type=int, help=f"data-loading processes (default {d.data.num_workers})")
    p.add_argument("--resume", action="store_true", help="continue the stopped or killed run in --out")
    p.add_argument("--edits", help="an edits file: images excluded or relabelled (File > Edits in the window)")
    p.add_argument("--keep-all-checkpoints", action="store_const", const="all", dest="keep_checkpoints",
                   help="keep every epoch's checkpoint (default: the last and the best by held-out MAP@R)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, only the log")
    lp = p.add_argument_group("loss parameters (each applies to the losses named in its help)")
    for name, uses in sorted(_loss_param_names().items()):
        kind = type(uses[0][1])
        typ = (lambda s: s.lower() in ("1", "true", "yes", "on")) if kind is bool else kind
        losses = ", ".join(f"{ln}={default}" for ln, default, _ in uses)
        lp.add_argument(f"--{name.replace('_', '-')}", dest=f"lossparam_{name}", type=typ, default=None,
                        metavar=kind.__name__.upper(), help=f"{uses[0][2]} [{losses}]")
    return p


def _config_from_args(args: argparse.Namespace, loss_for_params: str | None = None):
    from trainer.config import PRESETS, TrainConfig, preset_title
    from trainer.model.losses import LOSSES

    cfg = TrainConfig()
    preset = PRESETS[preset_title(args.preset)] if args.preset else {}
    cfg = cfg.replace(**preset)
    changes = {"data.data_dir": str(Path(args.data_dir).resolve())}
    mapping = {
        "loss": "loss.name", "backbone": "model.backbone", "pretrained": "model.pretrained",
        "weights_file": "model.weights_file", "head_only": "model.head_only",
        "freeze_backbone_epochs": "model.freeze_backbone_epochs", "epochs": "optim.epochs",
        "embedding_dim": "model.embedding_dim", "head_bn": "model.head_bn", "image_size": "data.image_size",
        "augment": "data.augment", "flip": "data.flip", "crop_scale": "data.crop_scale", "batch_classes": "data.batch_classes", "batch_per_class": "data.batch_per_class",
        "batches_per_epoch": "optim.batches_per_epoch", "lr": "optim.lr", "loss_lr": "optim.loss_lr",
        "head_lr_mult": "optim.head_lr_mult",
        "test_dir": "data.test_dir", "holdout_fraction": "data.holdout_fraction", "seed": "seed",
        "device": "device", "amp": "amp", "workers": "data.num_workers", "keep_checkpoints": "keep_checkpoints",
        "edits": "data.edits",
    }
    for arg, key in mapping.items():
        value = getattr(args, arg)
        if value is not None:
            changes[key] = value
    if getattr(args, "edits", None):
        changes["data.edits"] = str(Path(args.edits).resolve())
    if args.crop_scale is not None and not 0.0 < args.crop_scale <= 1.0:
        raise SystemExit(f"error: --crop-scale must be in (0, 1], not {args.crop_scale:g}")
    if args.holdout_classes:
        changes["data.holdout_classes"] = tuple(c.strip() for c in args.holdout_classes.split(",") if c.strip())
    from trainer.train.recipe import RECIPE_LOSS

    given = [k for k, v in vars(args).items() if k.startswith("lossparam_") and v is not None]
    if given and "loss.name" not in changes and not args.preset and loss_for_params is None:
        changes["loss.name"] = RECIPE_LOSS  # parameters without --loss are the recipe loss's: they pin it
    loss_name = loss_for_params or changes.get("loss.name", cfg.loss.name)
    spec = LOSSES[loss_name]
    if args.miner is not None:  # otherwise the recipe's: the loss's usual miner (trainer/train/recipe.py)
        changes["loss.miner"] = args.miner
    allowed = {prm.name for prm in spec.params}
    params = {}
    for key, value in vars(args).items():
        if key.startswith("lossparam_") and value is not None:
            name = key[len("lossparam_"):]
            if name not in allowed:
                raise SystemExit(f"error: --{name.replace('_', '-')} is not a parameter of the {loss_name} loss "
                                 f"(its parameters: {', '.join(sorted(allowed)) or 'none'})")
            params[name] = value
    if params or "loss.name" in changes:
        changes["loss.params"] = params
    # what the user did not set (by an option or a preset) is left to the recipe, chosen when the run starts
    from trainer.train.recipe import RECIPE_KEYS

    chosen = set(changes) | set(preset)
    if "loss.name" in chosen:
        chosen.add("loss.params")
    changes["auto"] = tuple(k for k in RECIPE_KEYS if k not in chosen)
    return cfg.replace(**changes)


# ----------------------------------------------------------------------------- commands
def cmd_train(argv: list[str]) -> int:
    from tqdm import tqdm

    from trainer import events as ev
    from trainer.train.engine import Trainer

    from trainer.train.checks import config_problems

    args = _train_parser().parse_args(argv)
    try:
        cfg = _config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.preset and args.batch_classes is None and not args.resume:
        cfg = _fit_preset_to_folder(cfg)
    if args.resume and args.epochs is None:
        cfg = _keep_stored_epochs(cfg, Path(args.out))
    problems = [] if args.resume else config_problems(cfg, run_dir=Path(args.out))
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.dry_run:
        return _dry_run(cfg, resume=Path(args.out) if args.resume else None)
    if not args.resume and Path(args.out).exists() and any(Path(args.out).iterdir()):
        print(f"error: {args.out} exists and is not empty; use --resume to continue it, or another --out",
              file=sys.stderr)
        return 1
    state = {"bar": None, "failed": None, "epoch_bar": None}

    def emit(e) -> None:
        if isinstance(e, ev.Started):
            print(f"training on {e.device}: {e.message}; {e.epochs} epochs x {e.batches_per_epoch} batches "
                  f"-> {e.run_dir}")
            if not args.quiet:
                # epochs of training (the untrained epoch 0 that is measured first is not one of them)
                state["epoch_bar"] = tqdm(total=e.epochs, initial=min(e.start_epoch, e.epochs), desc="epochs",
                                          unit="epoch", position=0)
        elif isinstance(e, ev.BatchDone):
            if args.quiet:
                return
            if state["bar"] is None or e.batch == 0:
                if state["bar"] is not None:
                    state["bar"].close()
                state["bar"] = tqdm(total=e.batches_per_epoch, desc=f"epoch {e.epoch}", unit="batch",
                                    position=1, leave=False)
            state["bar"].update(1)
            state["bar"].set_postfix(loss=f"{e.loss:.4f}", img_s=f"{e.images_per_second:.0f}",
                                     hard=e.n_hard, semi=e.n_semihard)
        elif isinstance(e, ev.EpochDone):
            if state["epoch_bar"] is not None and e.epoch > 0:
                state["epoch_bar"].update(1)
        elif isinstance(e, ev.Log):
            (tqdm.write if not args.quiet else print)(f"[{e.level}] {e.message}" if e.level != "info" else e.message)
        elif isinstance(e, ev.Failed):
            state["failed"] = e
        elif isinstance(e, ev.Stopped):
            for k in ("bar", "epoch_bar"):
                if state[k] is not None:
                    state[k].close()

    trainer = Trainer(cfg, Path(args.out), emit=emit, resume=args.resume, rank=_env_int("RANK", 0),
                      world_size=_env_int("WORLD_SIZE", 1))
    try:
        trainer.run()
    except KeyboardInterrupt:
        print("interrupted: the last committed epoch is kept; continue with --resume", file=sys.stderr)
        return 130
    if state["failed"] is not None:
        print(f"error: {state['failed'].message}", file=sys.stderr)
        return 1
    print(_train_summary(Path(args.out)))
    return 0


def _keep_stored_epochs(cfg, run_dir: Path):
    """``train --resume`` without ``--epochs``: the run's own number of epochs, not the default's (a run of 30
    epochs resumed at epoch 12 goes on to 30). A run that cannot be read is left to the trainer to name."""
    from trainer.errors import ExplorerError
    from trainer.store import RunReader

    try:
        epochs = int(RunReader(run_dir).config["optim"]["epochs"])
    except (ExplorerError, OSError, ValueError, KeyError, TypeError):
        return cfg
    return cfg.replace(**{"optim.epochs": epochs}) if epochs >= 1 else cfg


def _fit_preset_to_folder(cfg):
    """A preset's C lowered to the folder's training classes, as the form does (said on stdout when it changes)."""
    import numpy as np

    from trainer.data.scan import scan_folder
    from trainer.train.checks import fit_to_folder

    try:
        scan = scan_folder(cfg.data.data_dir)
    except (ValueError, OSError):  # the trainer names the folder's problem itself
        return cfg
    counts = np.bincount(np.asarray(scan.labels, dtype=np.int64), minlength=len(scan.classes))
    fitted = fit_to_folder(cfg, {c: int(n) for c, n in zip(scan.classes, counts)})
    if fitted.data.batch_classes != cfg.data.batch_classes:
        print(f"the preset's C = {cfg.data.batch_classes} classes per batch lowered to "
              f"{fitted.data.batch_classes}: the folder keeps {fitted.data.batch_classes} classes for training")
    return fitted


def _train_summary(run_dir: Path) -> str:
    """The lines printed when training ends: where the run is, its best epoch, and how to open or use it."""
    import numpy as np

    from trainer.errors import ExplorerError
    from trainer.store import RunReader

    key = "heldout/mean_average_precision_at_r"
    try:
        run = RunReader(run_dir)
        table = run.metrics_history()
        values = table.get(key, np.zeros(0))
        history = {int(e): float(v) for e, v in zip(table["epoch"], values) if np.isfinite(v)}
    except (ExplorerError, OSError, ValueError) as exc:
        return f"the run is in {run_dir} (its summary could not be read: {exc})"
    lines = [f"run: {run_dir} ({len(run.epochs)} epochs stored, {len(run.checkpoints)} checkpoints)"]
    if history:
        best = max(history, key=lambda e: (history[e], -e))  # the first of equals
        first, last = min(history), max(history)
        lines.append(f"held-out MAP@R: epoch {first} {history[first]:.3f} -> epoch {last} {history[last]:.3f}; "
                     f"best epoch {best} ({history[best]:.3f})")
    lines.append(f"open it: python main.py {run_dir}   evaluate: python main.py evaluate {run_dir}")
    return "\n".join(lines)


def _dry_run(cfg, resume: Path | None = None) -> int:
    """What `train` would do, without training: the recipe with its reasons (for a new run) or the run's stored
    configuration (``--resume``: its recipe was resolved when it started), and the estimated time."""
    from trainer.errors import ExplorerError
    from trainer.model.device import pick_device
    from trainer.train.engine import resume_config, scan_samples
    from trainer.train.recipe import describe_estimate, estimate_epoch_seconds, resolve_logged
    from trainer.store import SPLIT_TRAIN, RunReader

    try:
        epochs_left = cfg.optim.epochs
        if resume is not None:
            if not resume.is_dir():
                raise ValueError(f"cannot resume {resume}: the folder does not exist")
            reader = RunReader(resume)
            for message in reader.messages:  # what the real resume will say too (a damaged epoch left out, ...)
                print(f"[warning] {message}")
            cfg = resume_config(reader.config, cfg)
            samples, classes = reader.samples, reader.classes
            done = reader.checkpoints
            epochs_left = max(0, cfg.optim.epochs - done[-1]) if done else cfg.optim.epochs
            print(f"resuming {resume}: its stored configuration (the recipe was chosen when it started); "
                  + (f"continues after the checkpoint of epoch {done[-1]}" if done else "no checkpoint: starts over")
                  + f", {epochs_left} of {cfg.optim.epochs} epochs left")
        else:
            samples, classes = scan_samples(cfg, lambda m, level="info": None)
        device = pick_device(cfg.device)
        if cfg.auto and resume is None:
            cfg = resolve_logged(cfg, samples, device.type,
                                 lambda m, level="info": print(m if level == "info" else f"[{level}] {m}"))
        n_train = int((samples.split == SPLIT_TRAIN).sum())
        print(f"{len(samples.paths)} images in {len(classes)} classes, {n_train} for training")
        import numpy as np

        from trainer.train.checks import config_problems

        counts = np.bincount(np.asarray(samples.labels, dtype=np.int64), minlength=len(classes))
        problems = config_problems(cfg, {c: int(n) for c, n in zip(classes, counts)})
        for problem in problems:  # what the trainer would stop on, said before anything is timed
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            return 1
        if resume is not None:
            print("stored: " + ", ".join(f"{k} = {v}" for k, v in _flat(cfg.to_dict()).items() if k in _SHOWN))
        else:
            user = [f"{k} = {v}" for k, v in _flat(cfg.to_dict()).items() if k not in set(cfg.auto) and k in _SHOWN]
            if user:
                print("not chosen by the recipe (your options, a preset or the defaults): " + ", ".join(user))
        times = estimate_epoch_seconds(cfg, n_train, len(samples.paths), device.type, len(classes))
        print("estimated time: " + describe_estimate(*times, device.type, epochs_left)
              + " (timed on synthetic batches; image decoding not included)")
    except (ExplorerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


_SHOWN = ("model.backbone", "model.pretrained", "optim.epochs", "data.image_size", "loss.name", "optim.lr",
          "data.batch_classes", "data.batch_per_class", "model.embedding_dim")


def _flat(d: dict) -> dict:
    from trainer.config import flat_config

    return flat_config(d)


def cmd_lr_find(argv: list[str]) -> int:
    p = _train_parser()
    p.prog = "main.py lr-find"
    p.description = ("Learning-rate range test: a short run with an exponentially rising learning rate on the "
                     "folder's own batches; prints the loss curve and a suggested --lr (nothing is written).")
    for a in p._actions:
        if a.dest == "out":
            a.required = False
            a.help = "optional: also save the curve as CSV to this file"
    p.add_argument("--start-lr", type=float, default=1e-6, help="lowest rate tested (default 1e-6)")
    p.add_argument("--end-lr", type=float, default=1.0, help="highest rate tested (default 1)")
    p.add_argument("--steps", type=int, default=100, help="batches, one rate each (default 100)")
    args = p.parse_args(argv)
    from trainer.errors import ExplorerError
    from trainer.train.lr_find import lr_range_test

    cfg = _config_from_args(args)
    try:
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, desc="lr-find", unit="batch")

        def progress(i, n, lr, loss):
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.2g}", loss=f"{loss:.3f}")

        res = lr_range_test(cfg, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
                            log=lambda m, level="info": print(m) if level != "info" or m.startswith("recipe")
                            else None, progress=progress)
        if bar is not None:
            bar.close()
    except (ExplorerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("lr          loss     smoothed")
    for i in range(0, len(res.lrs), max(1, len(res.lrs) // 20)):
        print(f"{res.lrs[i]:<11.3g} {res.losses[i]:<8.4f} {res.smoothed[i]:.4f}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("lr,loss,smoothed\n")
            for row in zip(res.lrs, res.losses, res.smoothed):
                f.write(",".join(f"{x:.6g}" for x in row) + "\n")
    if res.suggestion is None:
        print(f"no suggestion: {res.reason}")
        return 0
    print(f"suggested --lr {res.suggestion:.2g} ({res.reason})")
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from trainer.model.losses import LOSSES

    p = _train_parser()
    p.prog = "main.py sweep"
    p.description = ("A fair loss comparison: trains each loss with its recipe on the same split and budget for "
                     "several seeds, and prints held-out MAP@R per loss with a 95 % interval. Writes one run per "
                     "loss and seed under --out, and sweep.json with the summary; a stopped sweep continues.")
    for a in p._actions:
        if a.dest == "out":
            a.help = "folder of the sweep's runs"
    p.add_argument("--losses", required=True, help=f"comma-separated loss names, or 'all' ({len(LOSSES)} losses)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per loss (default 3)")
    args = p.parse_args(argv)
    if args.dry_run:
        p.error("--dry-run is for train")
    if args.seed is not None:
        # the sweep's runs are LOSS-s0 ... LOSS-s(N-1), each seeded by its index
        p.error(f"--seed is for train: a sweep trains seeds 0 to N-1 of --seeds N (asked for --seed {args.seed})")
    losses = list(LOSSES) if args.losses == "all" else [x.strip() for x in args.losses.split(",") if x.strip()]
    unknown = [x for x in losses if x not in LOSSES]
    if unknown:
        p.error(f"unknown loss {', '.join(unknown)}; `python main.py losses` lists them")
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    from trainer import events as ev
    from trainer.train.sweep import format_table, run_sweep

    given = {k[len("lossparam_"):] for k, v in vars(args).items() if k.startswith("lossparam_") and v is not None}
    takes = [x for x in losses if given <= {prm.name for prm in LOSSES[x].params}]
    if given and not takes:
        p.error(f"no swept loss has all of the parameters {', '.join(sorted(given))}")
    base = _config_from_args(args, loss_for_params=takes[0] if given else None)

    def emit_for(loss, seed):
        def emit(e):
            if isinstance(e, ev.EpochDone) and not args.quiet:
                m = e.metrics.get("heldout/mean_average_precision_at_r")
                print(f"{loss} seed {seed} epoch {e.epoch}: held-out MAP@R "
                      f"{'-' if m is None else f'{m:.4f}'} ({e.seconds:.0f} s)", flush=True)
            elif isinstance(e, ev.Failed):
                print(f"{loss} seed {seed} failed: {e.message}", file=sys.stderr)
        return emit

    try:
        summary = run_sweep(base, losses, args.seeds, Path(args.out), emit_for=emit_for)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to continue", file=sys.stderr)
        return 130
    for line in format_table(summary):
        print(line)
    print(f"runs and sweep.json in {args.out}")
    return 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def cmd_embed(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py embed", description="Embed an image folder with a run's checkpoint; "
                                "writes embeddings, paths and (for class sub-folders) labels to an HDF5 file.")
    p.add_argument("run_dir")
    p.add_argument("image_dir", help="a folder of images; with class sub-folders, labels are written too")
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--checkpoint", help="checkpoint file (default: the run's last)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--projector", help="also write a TensorBoard projector folder (tensors, metadata, sprite)")
    p.add_argument("--parquet", help="also write a Parquet table (id, path, label, split, vector)")
    args = p.parse_args(argv)
    from trainer.errors import ExplorerError
    from trainer.inference import embed_folder

    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def bar(name: str, unit: str):
        def update(done: int, total: int) -> None:
            if name not in bars:
                bars[name] = tqdm(total=total, desc=name, unit=unit, file=sys.stderr)
            bars[name].update(done - bars[name].n)
        return update

    try:
        info = embed_folder(Path(args.run_dir), Path(args.image_dir), Path(args.out), checkpoint=args.checkpoint,
                            device=args.device, batch_size=args.batch_size, progress=bar("embed", "img"),
                            scan_progress=bar("scan", "file"))
    except (ExplorerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for b in bars.values():
            b.close()
    print(f"wrote {info['n']} embeddings of dimension {info['dim']} to {args.out}"
          + (f" ({info['n_skipped']} files skipped)" if info.get("n_skipped") else ""))
    try:
        _write_formats(args, info)
    except ImportError as exc:
        print(f"error: the Parquet table needs pyarrow: pip install pyarrow ({exc})", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _write_formats(args, info: dict) -> None:
    """``embed --projector`` / ``--parquet``: the same embeddings in TensorBoard's and Parquet's layouts."""
    from trainer.export.formats import write_parquet, write_projector

    splits = ["embedded"] * info["n"]
    if args.projector:
        from trainer.data.images import load_image

        paths = info["paths"]
        write_projector(args.projector, info["embeddings"], paths, info["labels"], splits,
                        images=lambda i: load_image(paths[i], draft_size=64))
        print(f"wrote a TensorBoard projector folder to {args.projector} (tensorboard --logdir {args.projector})")
    if args.parquet:
        write_parquet(args.parquet, info["embeddings"], info["paths"], info["labels"], splits)
        print(f"wrote a Parquet table to {args.parquet}")


def cmd_evaluate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py evaluate", description="Retrieval and verification metrics of a run's "
                                "epoch (default: last) on its held-out classes, or on another labelled folder.")
    p.add_argument("run_dir")
    p.add_argument("--data", help="a labelled image folder to embed with the run's checkpoint and evaluate")
    p.add_argument("--epoch", type=int, help="epoch to evaluate (default: last committed)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from trainer.errors import ExplorerError
    from trainer.inference import evaluate_run

    try:
        metrics = evaluate_run(Path(args.run_dir), data=args.data, epoch=args.epoch, device=args.device)
    except (ExplorerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for note in metrics.pop("warnings", []):
        print(f"warning: {note}", file=sys.stderr)
    if args.json:  # strict JSON: a metric that is not defined (NaN) is null
        strict = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        print(json.dumps(strict, indent=2, sort_keys=True, allow_nan=False))
    else:
        width = max(map(len, metrics))
        for k, v in metrics.items():
            print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return 0


def _one_line_errors(work, missing: str):
    """Run ``work()``; an error the user can act on becomes one line on stderr and exit status 1 (``missing``
    names the extra to install when a library is not there)."""
    from trainer.errors import ExplorerError

    try:
        return work(), 0
    except ImportError as exc:
        print(f"error: {missing} ({exc})", file=sys.stderr)
    except (ExplorerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return None, 1


def _epoch_arg(text: str):
    if text in ("best", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an epoch number, best or last, not {text!r}") from None


def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py export", description="Write a model bundle: the run's network as ONNX "
                                "and TorchScript, its preprocessing, metric and calibrated threshold, a model card "
                                "and embed.py (onnxruntime only). It needs neither the app nor the run.")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the bundle folder to create")
    p.add_argument("--epoch", type=_epoch_arg, default="best",
                   help="best (by held-out MAP@R, default), last, or an epoch with a checkpoint")
    p.add_argument("--format", default="onnx,torchscript", help="onnx,torchscript (default) or onnx")
    p.add_argument("--far", type=float, help="threshold at this false-accept rate instead of the equal error rate "
                                             "(a threshold saved from the studio for that epoch is used otherwise)")
    args = p.parse_args(argv)

    def work():
        from trainer.export.bundle import export_bundle

        return export_bundle(Path(args.run_dir), Path(args.out), epoch=args.epoch, far=args.far,
                             formats=tuple(f.strip() for f in args.format.split(",") if f.strip()), log=print)

    return _one_line_errors(work, "exporting needs onnx and onnxruntime: pip install 'embedding-explorer[export]'")[1]


def cmd_verify(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py verify", description="Same or not the same: the distance of two "
                                "images, the threshold, and what that threshold means on the held-out classes.")
    p.add_argument("model", help="a bundle folder (main.py export) or a run folder")
    p.add_argument("images", nargs="*", help="IMAGE_A IMAGE_B")
    p.add_argument("--pairs", help="a CSV of image pairs (two columns) instead of IMAGE_A IMAGE_B")
    p.add_argument("--out", help="with --pairs: write the decisions to this CSV")
    p.add_argument("--far", type=float, help="decide at the largest threshold with this false-accept rate")
    args = p.parse_args(argv)
    if bool(args.pairs) == bool(args.images) or (args.images and len(args.images) != 2):
        p.error("give IMAGE_A IMAGE_B, or --pairs FILE.csv")
    from trainer.export.use import meaning, open_model, read_pairs, verify_pairs, write_decisions

    def work():
        model = open_model(args.model)
        pairs = read_pairs(args.pairs) if args.pairs else [(args.images[0], args.images[1])]
        rows = verify_pairs(model, pairs, far=args.far)
        if args.out:
            write_decisions(args.out, rows)
        return rows, model.threshold_at(args.far)

    got, rc = _one_line_errors(work, "a bundle needs onnxruntime: pip install onnxruntime")
    if rc:
        return rc
    rows, (_, rule, rates) = got
    if args.pairs:
        same = sum(r["same"] for r in rows)
        print(f"{len(rows)} pairs: {same} the same, {len(rows) - same} not"
              + (f"; decisions written to {args.out}" if args.out else ""))
    else:
        r = rows[0]
        print(f"{'same' if r['same'] else 'not the same'}: distance {r['distance']:.4f} "
              f"{'<=' if r['same'] else '>'} threshold {r['threshold']:.4f}")
    print(f"threshold: {rule}; {meaning(rates)}")
    return 0


def cmd_search(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py search", description="Nearest neighbours of query images in a "
                                "gallery, with distances and whether each is within the threshold.")
    p.add_argument("model", help="a bundle folder (main.py export) or a run folder")
    p.add_argument("queries", nargs="+", help="query image files")
    p.add_argument("--gallery", required=True, help="an image folder, or an .h5 file written by main.py embed")
    p.add_argument("-k", type=int, default=5, help="neighbours per query (default 5)")
    args = p.parse_args(argv)
    from trainer.export.use import gallery, open_model, search

    def work():
        model = open_model(args.model)
        gx, gpaths = gallery(model, args.gallery)
        return model, search(model, args.queries, gx, gpaths, k=args.k)

    got, rc = _one_line_errors(work, "a bundle needs onnxruntime: pip install onnxruntime")
    if rc:
        return rc
    model, results = got
    t = float(model.threshold["value"])
    for q, hits in zip(args.queries, results):
        print(f"{q}:")
        for rank, h in enumerate(hits, 1):
            print(f"  {rank:2d}. {h['distance']:.4f} {'within' if h['within'] else 'beyond'} {t:.4f}  {h['path']}")
    return 0


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="main.py compare", description="Compare runs: held-out MAP@R at each run's best "
                                "and last epoch with 95 %% intervals over held-out classes, the difference to the "
                                "first run (paired when the samples are the same), and the settings that differ.")
    p.add_argument("runs", nargs="+", help="run folders, or a sweep folder (all its runs)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--images", type=int, default=0, metavar="N",
                   help="also list the N held-out images that got most worse and most better from the first run to "
                        "the second (same samples: first correct neighbour, neighbours changed)")
    args = p.parse_args(argv)
    from trainer.comparison import compare, format_image_changes, format_table, image_changes, load_entries
    from trainer.errors import ExplorerError

    try:
        entries = load_entries(args.runs)
        result = compare(entries, n_boot=args.resamples)
        changes = None
        if args.images > 0:
            if len(entries) < 2:
                raise ValueError("--images compares the first run with the second: give two runs")
            changes = image_changes(entries[0], entries[1])
    except (ExplorerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for e in entries:  # an epoch the reader left out (damaged, missing) is compared without: say so
        for message in e.run.messages:
            print(f"warning: {e.name}: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(format_table(result)))
        if changes is not None:
            run = entries[0].run
            print("\n".join(format_image_changes(changes, run.samples.paths, list(run.classes), args.images)))
    return 0


def cmd_losses(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="main.py losses", description="List every loss and miner with its parameters and "
                            "defaults.").parse_args(argv)
    from trainer.model.losses import describe_all

    print(describe_all())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return {"train": cmd_train, "lr-find": cmd_lr_find, "sweep": cmd_sweep, "embed": cmd_embed,
                "evaluate": cmd_evaluate, "losses": cmd_losses, "export": cmd_export, "verify": cmd_verify,
                "search": cmd_search, "compare": cmd_compare}[argv[0]](argv[1:])
    args = _app_parser().parse_args(argv)
    from explorer.app import run_app

    folder = run = None
    if args.path:
        from trainer.store import looks_like_run

        if looks_like_run(args.path):
            run = args.path
        else:
            folder = args.path
    if args.run:
        run = args.run
    return run_app(sys.argv[:1], demo=args.demo, folder=folder, run=run, compare=args.compare)


if __name__ == "__main__":
    sys.exit(main())
