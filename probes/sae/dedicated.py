"""Units dedicated to one subject: a unit (a neuron, or a dictionary feature) that fires for
a subject and stays below `ratio` of that activation for every subject sharing a name token
with it (the AND of "Michael Jordan" against "Michael Phelps" and "Alexis Jordan").

    acts = ...                                  # [n_subjects, n_units] at each subject's last token
    units = dedicated_units(acts, neighbours)   # per subject: its strongest dedicated unit, or None
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def dedicated_units(acts: torch.Tensor, neighbours: Sequence[Sequence[int]], ratio: float = 0.1) -> list[Optional[int]]:
    """For each row p of acts [n, units]: the unit with the largest activation among those with
    acts[p, u] > 0 and acts[q, u] < ratio * acts[p, u] for every q in neighbours[p]; None if none."""
    if acts.dim() != 2 or acts.shape[0] != len(neighbours):
        raise ValueError(f"acts must be [n_subjects, n_units] with one neighbour list per subject, got "
                         f"{list(acts.shape)} and {len(neighbours)} lists")
    out: list[Optional[int]] = []
    for p, near in enumerate(neighbours):
        mine = acts[p]
        ok = mine > 0
        if len(near):
            ok &= acts[list(near)].max(0).values < ratio * mine
        out.append(int(torch.where(ok, mine, torch.full_like(mine, -torch.inf)).argmax()) if ok.any() else None)
    return out


__all__ = ["dedicated_units"]
