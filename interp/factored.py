"""A low-rank matrix kept as two factors, M = A @ B, with TransformerLens' `FactoredMatrix` API.

    OV = model.OV                      # [n_layers, n_heads, d_model, d_model], as W_V @ W_O
    OV[1, 2].eigenvalues               # [d_head] complex: those of B @ A, the non-zero ones of A @ B
    U, S, V = OV.svd()                 # M == U @ diag(S) @ V^T  (V, not V^T, as TransformerLens 4)
    (model.W_E @ OV[0, 0]).AB          # products stay factored until .AB

A [..., ldim, mdim] and B [..., mdim, rdim]; leading axes broadcast. Products with a
tensor keep whichever factorisation has the smaller inner dimension (as TransformerLens).
Linear algebra (svd, eig) runs in float64 at least and the results come back in that
precision. Part of the base layer: pure torch.
"""

from __future__ import annotations

from functools import cached_property
from typing import Union

import torch

Index = Union[int, slice, torch.Tensor]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float64, torch.complex128) else x.double()


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


class FactoredMatrix:
    """M = A @ B without forming it. A [..., ldim, mdim], B [..., mdim, rdim]."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor) -> None:
        if A.dim() < 2 or B.dim() < 2:
            raise ValueError(f"FactoredMatrix needs matrices, got A {tuple(A.shape)} and B {tuple(B.shape)}")
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"inner dimensions differ: A {tuple(A.shape)} @ B {tuple(B.shape)}")
        try:
            lead = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except RuntimeError:
            raise ValueError(f"leading axes do not broadcast: A {tuple(A.shape)}, B {tuple(B.shape)}") from None
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        self.A = A.broadcast_to(lead + (self.ldim, self.mdim))
        self.B = B.broadcast_to(lead + (self.mdim, self.rdim))
        self.shape = torch.Size(lead + (self.ldim, self.rdim))

    # ------------------------------------------------------------ shape
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A, self.B

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, mdim={self.mdim})"

    def unsqueeze(self, dim: int) -> "FactoredMatrix":
        """A new leading axis (dim counts among the leading axes)."""
        return FactoredMatrix(self.A.unsqueeze(dim), self.B.unsqueeze(dim))

    def __getitem__(self, idx: Union[Index, tuple]) -> "FactoredMatrix":
        """Index leading axes; an index reaching the row (column) axis selects rows of A
        (columns of B). Integer row/column indices keep their axis, as in TransformerLens."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is None or i is Ellipsis for i in idx):
            raise IndexError("FactoredMatrix indexing takes ints, slices and index tensors (no None or ...)")
        n_lead = self.ndim - 2
        if len(idx) > self.ndim:
            raise IndexError(f"too many indices ({len(idx)}) for a FactoredMatrix of shape {tuple(self.shape)}")

        def keep(i: Index) -> Index:
            return slice(i, i + 1 if i != -1 else None) if isinstance(i, int) else i

        lead, rest = idx[:n_lead], idx[n_lead:]
        A, B = self.A[lead], self.B[lead]
        if len(rest) >= 1:
            A = A[..., keep(rest[0]), :]
        if len(rest) == 2:
            B = B[..., :, keep(rest[1])]
        return FactoredMatrix(A, B)

    # ------------------------------------------------------------ products
    @property
    def AB(self) -> torch.Tensor:
        """The full matrix [..., ldim, rdim]."""
        return self.A @ self.B

    @property
    def BA(self) -> torch.Tensor:
        """B @ A [..., mdim, mdim]; only for square M (ldim == rdim)."""
        if self.ldim != self.rdim:
            raise ValueError(f"BA needs a square matrix, this one is {self.ldim} x {self.rdim}")
        return self.B @ self.A

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(_t(self.B), _t(self.A))

    def __matmul__(self, other: Union[torch.Tensor, "FactoredMatrix"]) -> Union[torch.Tensor, "FactoredMatrix"]:
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        if other.dim() == 1:
            return self.A @ (self.B @ other)
        if other.shape[-2] != self.rdim:
            raise ValueError(f"shapes do not match: {tuple(self.shape)} @ {tuple(other.shape)}")
        if self.rdim > self.mdim:
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other: torch.Tensor) -> Union[torch.Tensor, "FactoredMatrix"]:
        if other.shape[-1] != self.ldim:
            raise ValueError(f"shapes do not match: {tuple(other.shape)} @ {tuple(self.shape)}")
        if other.dim() == 1:
            return (other @ self.A) @ self.B
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar: Union[int, float, torch.Tensor]) -> "FactoredMatrix":
        if isinstance(scalar, torch.Tensor) and scalar.numel() != 1:
            raise ValueError(f"* takes a scalar, got shape {tuple(scalar.shape)}; use @ for matrix products")
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    # ------------------------------------------------------------ spectra
    @cached_property
    def _svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # SVD of the small middle matrix diag(Sa) Va^T Ub diag(Sb), then rotate back.
        Ua, Sa, Vha = torch.linalg.svd(_upcast(self.A), full_matrices=False)
        Ub, Sb, Vhb = torch.linalg.svd(_upcast(self.B), full_matrices=False)
        middle = Sa[..., :, None] * (Vha @ Ub) * Sb[..., None, :]
        Um, Sm, Vhm = torch.linalg.svd(middle, full_matrices=False)
        return Ua @ Um, Sm, _t(Vhb) @ _t(Vhm)

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U [..., ldim, mdim], S [..., mdim], V [..., rdim, mdim]) with M == U diag(S) V^T."""
        return self._svd

    @property
    def U(self) -> torch.Tensor:
        return self._svd[0]

    @property
    def S(self) -> torch.Tensor:
        return self._svd[1]

    @property
    def V(self) -> torch.Tensor:
        return self._svd[2]

    @property
    def Vh(self) -> torch.Tensor:
        raise AttributeError(
            "FactoredMatrix.Vh is ambiguous: TransformerLens' Vh returns V (not V^T) and is deprecated there. "
            "Use .V (M == U diag(S) V^T) or .V.transpose(-2, -1)."
        )

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of B @ A [..., mdim] (complex): the non-zero eigenvalues of A @ B."""
        return torch.linalg.eigvals(_upcast(self.BA))

    def norm(self) -> torch.Tensor:
        """Frobenius norm [...]."""
        return self.S.pow(2).sum(-1).sqrt()

    def make_even(self) -> "FactoredMatrix":
        """The same matrix as (U sqrt(S), sqrt(S) V^T): balanced factors."""
        root = self.S.sqrt()
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * _t(self.V))

    def collapse_l(self) -> torch.Tensor:
        """diag(S) V^T [..., mdim, rdim]: M without its left orthogonal factor."""
        return self.S[..., :, None] * _t(self.V)

    def collapse_r(self) -> torch.Tensor:
        """U diag(S) [..., ldim, mdim]."""
        return self.U * self.S[..., None, :]

    def unit_norm(self) -> "FactoredMatrix":
        """M divided by its Frobenius norm."""
        n = self.norm()
        return FactoredMatrix(self.A / n[..., None, None].to(self.A.dtype), self.B)

    def get_corner(self, k: int = 3) -> torch.Tensor:
        """The first k entries along every axis of M, formed without the full product."""
        corner = self.A[..., :k, :] @ self.B[..., :, :k]
        return corner[tuple(slice(k) for _ in range(corner.dim()))]


__all__ = ["FactoredMatrix"]
