"""Display labels of result axes, one place for the plots and the interactive views.

    tagged("layer", "3") -> "L3"      tagged("head", "L3") -> "L3"      tagged("seed", "2") -> "seed=2"
    position_labels(["<bos>", "Michael"]) -> ["<bos> (0)", "Michael (1)"]
"""

from __future__ import annotations

import re
from typing import Any, Sequence

AXIS_TAGS = {"layer": "L", "head": "H", "neuron": "N", "feature": "F"}


def display_token(tok: Any) -> str:
    """A token printable on one line: newlines and tabs escaped."""
    return str(tok).replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def position_labels(tokens: Sequence[Any]) -> list[str]:
    """Column labels "tok (i)", so that repeated tokens stay distinguishable. Labels that already
    end in a position, like "Jordan (2)" from a result's labels, are kept; a label that is just
    its index stays "i"."""
    out = []
    for i, tok in enumerate(tokens):
        tok = display_token(tok)
        if re.search(r" \(\d+\)$", tok):
            out.append(tok)
        else:
            out.append(str(i) if tok == str(i) else f"{tok} ({i})")
    return out


def tagged(axis: str, label: str) -> str:
    """`label` of a known axis with its letter: layer "3" -> "L3"; "L3" or "embed" stay as they
    are; an index on another axis is named: "seed=2"."""
    label = str(label)
    if not label.lstrip("-").isdigit():
        return label
    tag = AXIS_TAGS.get(axis)
    return f"{tag}{label}" if tag is not None else f"{axis}={label}"


__all__ = ["AXIS_TAGS", "display_token", "position_labels", "tagged"]
