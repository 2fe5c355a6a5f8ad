"""Lazy package exports (hook base: standard library only): `interp` and `probes` list their main
entry points as {name: module} and import each module on first use, so importing the package
(what the models and the command line do) loads nothing else."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for a package whose names `exports` maps to their modules."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
