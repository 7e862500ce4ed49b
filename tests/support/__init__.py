"""What the tests share: image folders, run builders, brute-force twins, the repository root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
