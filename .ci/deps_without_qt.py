"""Print the project's runtime and test dependencies except Qt (PySide6, pyqtgraph, pytest-qt), one per word."""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
deps = project["dependencies"] + project["optional-dependencies"]["test"]
qt = re.compile(r"^(pyside6|pyqtgraph|pytest-qt)", re.I)
print(" ".join(d.replace(" ", "") for d in deps if not qt.match(d)))
