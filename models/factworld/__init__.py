"""The fact-world model: a small transformer trained on a knowledge base we write."""

from pathlib import Path


def checkpoint_dir() -> Path:
    """Where the shipped fact-world checkpoint lives (inside the package)."""
    return Path(__file__).resolve().parent / "checkpoint"
