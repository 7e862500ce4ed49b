"""File > Export: the model bundle, the embeddings of the epoch shown (projector folder + Parquet), and the
selection (CSV, or its paths on the clipboard). The work runs in the window's job runner; this only asks and tells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

EXPORT_MODEL_JOB = "export-model"
EXPORT_EMBEDDINGS_JOB = "export-embeddings"


def _bundle_job(run_dir: str, out: str, epoch, *, progress, partial, is_cancelled) -> dict:
    from trainer.export.bundle import export_bundle

    progress(0.1, "exporting the network and calibrating its threshold")
    info = export_bundle(run_dir, out, epoch=epoch)
    return {"out": out, "threshold": info["threshold"], "epoch": info["source"]["epoch"]}


def _embeddings_job(run, epoch: int, folder: str, xy, *, progress, partial, is_cancelled) -> list[str]:
    from trainer.data.images import load_image
    from trainer.export.formats import SPLIT_WORDS, sample_files, write_parquet, write_projector

    progress(0.1, f"reading epoch {epoch}")
    x = np.asarray(run.load_epoch(epoch).embeddings, np.float32)
    samples = run.samples
    files = sample_files(samples)
    classes = list(run.classes)
    labels = [classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c)) for c in samples.labels]
    splits = [SPLIT_WORDS.get(int(s), "?") for s in samples.split]
    name = f"{Path(run.run_dir).name}-epoch{epoch:04d}"
    proj = Path(folder) / f"{name}-projector"
    progress(0.3, "writing the projector folder and its sprite")
    write_projector(proj, x, files, labels, splits, images=lambda i: load_image(files[i], draft_size=64))
    table = Path(folder) / f"{name}.parquet"
    written = [str(proj)]
    try:
        progress(0.8, "writing the Parquet table")
        write_parquet(table, x, files, labels, splits, xy=xy)
        written.append(str(table))
    except ImportError:  # pyarrow is an extra; the projector folder is written anyway
        written.append("(no Parquet table: pip install pyarrow)")
    return written


class ExportActions:
    """The export items of the window's File menu."""

    def __init__(self, window) -> None:
        self.window = window

    def add_to(self, menu: QMenu) -> None:
        w = self.window
        sub = menu.addMenu("&Export")
        self.model_action = w._action(sub, "&Model bundle (ONNX, threshold)…", self.export_model, "Ctrl+Alt+E",
                                      "The network of the opened run's best epoch as ONNX and TorchScript, with "
                                      "its preprocessing and calibrated threshold (main.py export)")
        self.embeddings_action = w._action(sub, "&Embeddings of this epoch…", self.export_embeddings, None,
                                           "A TensorBoard projector folder and a Parquet table of the epoch shown")
        sub.addSeparator()
        self.selection_action = w._action(sub, "&Selection as CSV…", self.export_selection, None,
                                          "The selected images (map, search, lasso): id, path, label, split")
        self.copy_action = w._action(sub, "&Copy selected paths", self.copy_selection,
                                     QKeySequence("Ctrl+Shift+C"), "The selected images' files, one per line")

    # ---- the model ----------------------------------------------------------------------------------------------
    def export_model(self, out: str | None = None) -> bool:
        w = self.window
        run = w.state.run
        if run is None or not getattr(run, "checkpoints", []):
            QMessageBox.information(w, "Export model", "Open a run with a checkpoint first (File ▸ Open run…).")
            return False
        if out is None:
            start = str(Path(run.run_dir).parent / f"{Path(run.run_dir).name}-bundle")
            out, _ = QFileDialog.getSaveFileName(w, "Export the model bundle to a new folder", start, "Folder (*)")
            if not out:
                return False
        w.show_status(f"Exporting the model of {Path(run.run_dir).name} to {out} …")
        w.jobs.submit(EXPORT_MODEL_JOB, _bundle_job, str(run.run_dir), out, "best",
                      on_result=self._model_done, on_failed=self._failed("model"))
        return True

    def _model_done(self, result: dict) -> None:
        t = result["threshold"]
        text = (f"Wrote the bundle of epoch {result['epoch']} to {result['out']}.\n\nThreshold {t['value']:.4f} "
                f"({t['rule']}): it accepts {100 * t['far']:.2f} % of impostor pairs and rejects "
                f"{100 * t['frr']:.2f} % of genuine ones on the held-out classes.\n\nUse it with "
                f"python embed.py verify A B (in the bundle), or python main.py verify {result['out']} A B.")
        self.window.show_status(f"Model bundle written to {result['out']}")
        QMessageBox.information(self.window, "Export model", text)

    def _failed(self, what: str):
        def show(message: str) -> None:
            first = message.splitlines()[0] if message else "unknown error"
            self.window.show_status(f"Export of the {what} failed: {first}")
            QMessageBox.critical(self.window, f"Export {what}", f"The export failed:\n{first}")
        return show

    # ---- the embeddings -----------------------------------------------------------------------------------------
    def export_embeddings(self, folder: str | None = None) -> bool:
        w = self.window
        run, epoch = w.state.run, w.state.epoch
        if run is None or epoch < 0:
            QMessageBox.information(w, "Export embeddings", "Open a run first (File ▸ Open run…).")
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(w, "Export the embeddings into a folder",
                                                      str(Path(run.run_dir).parent))
            if not folder:
                return False
        xy = None
        map_view = getattr(w, "map_view", None)
        if map_view is not None and getattr(map_view, "shown_epoch", -1) == epoch and len(map_view.xy):
            xy = np.asarray(map_view.xy, np.float32)
        w.show_status(f"Exporting the embeddings of epoch {epoch} …")
        w.jobs.submit(EXPORT_EMBEDDINGS_JOB, _embeddings_job, run, epoch, folder, xy,
                      on_result=lambda written: w.show_status("Wrote " + ", ".join(written)),
                      on_failed=self._failed("embeddings"))
        return True

    # ---- the selection ------------------------------------------------------------------------------------------
    def _selection_rows(self):
        from trainer.export.formats import selection_rows

        w = self.window
        ids = np.asarray(w.state.selection, np.int64)
        if w.state.run is None or len(ids) == 0:
            w.show_status("Nothing is selected: select points in the map (click, box, lasso or search) first")
            return []
        return selection_rows(w.state.run.samples, list(w.state.run.classes), ids)

    def export_selection(self, path: str | None = None) -> bool:
        from trainer.export.formats import write_selection_csv

        rows = self._selection_rows()
        if not rows:
            return False
        w = self.window
        if path is None:
            start = str(Path(w.state.run.run_dir).parent / f"{Path(w.state.run.run_dir).name}-selection.csv")
            path, _ = QFileDialog.getSaveFileName(w, "Export the selection", start, "CSV (*.csv)")
            if not path:
                return False
        try:
            write_selection_csv(path, rows)
        except OSError as exc:
            QMessageBox.critical(w, "Export selection", f"Could not write {path}: {exc.strerror or exc}")
            return False
        w.show_status(f"Wrote {len(rows):,} selected images to {path}")
        return True

    def copy_selection(self) -> int:
        rows = self._selection_rows()
        if rows:
            QGuiApplication.clipboard().setText("\n".join(r[1] for r in rows))
            self.window.show_status(f"Copied the paths of {len(rows):,} selected images")
        return len(rows)
