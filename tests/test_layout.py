"""The layout's rules: trainer/ never imports Qt, the views' jobs modules neither, and the stages of trainer/
import one another one way only (no circles)."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support import ROOT

BLOCK_QT = (
    "import sys, importlib, pkgutil\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'qtpy', 'shiboken6'):\n"
    "            raise ImportError('Qt is blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def _import_with_qt_blocked(body: str) -> str:
    res = subprocess.run([sys.executable, "-c", BLOCK_QT + body], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_trainer_never_imports_qt():
    out = _import_with_qt_blocked(
        "import trainer\n"
        "names = [m.name for m in pkgutil.walk_packages(trainer.__path__, 'trainer.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names), 'ok')\n")
    assert out.strip().endswith("ok") and int(out.split()[0]) >= 30  # every module of every stage


def test_the_views_background_work_never_imports_qt():
    views = sorted(p.parent.name for p in (ROOT / "explorer" / "views").glob("*/jobs.py"))
    assert {"map", "neighbours", "threshold", "triplets", "training", "dataset"} <= set(views)
    out = _import_with_qt_blocked(
        f"for v in {views!r}:\n"
        "    importlib.import_module(f'explorer.views.{v}.jobs')\n"
        "for m in ('explorer.views.map.geometry', 'explorer.widgets.texts'):\n"
        "    importlib.import_module(m)\n"
        "print('ok')\n")
    assert out.strip() == "ok"


def _stage_imports() -> dict[str, set[str]]:
    """Which top-level part of trainer/ (data, model, train, analysis, store, config, ...) imports which."""
    edges: dict[str, set[str]] = {}
    for path in (ROOT / "trainer").rglob("*.py"):
        rel = path.relative_to(ROOT / "trainer").with_suffix("").parts
        stage = rel[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trainer":
                parts = node.module.split(".")
                targets = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
                for t in targets:
                    if t != stage:
                        edges.setdefault(stage, set()).add(t)
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import"
    return edges


def test_the_stages_import_one_way():
    edges = _stage_imports()
    # analysis works on arrays: no other stage; the model knows nothing of training or runs
    assert edges.get("analysis", set()) <= {"errors"}, edges.get("analysis")
    assert not edges.get("model", set()) & {"train", "data", "store", "analysis", "inference"}, edges.get("model")
    assert not edges.get("data", set()) & {"train", "model", "analysis"}, edges.get("data")
    # no circle anywhere: a depth-first search over the stage graph
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for stage in sorted(edges):
        if stage not in state:
            visit(stage, [stage])
