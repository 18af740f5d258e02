"""Exact integer GEMM primitives: int8 ``_int_mm`` (int32 out) and BLAS-exact float GEMMs.

A float32 GEMM is exact while every partial sum stays below ``2**24`` in magnitude, a float64
GEMM below ``2**53``; callers prove the bound before choosing one (see :func:`float_dtype_for`).
TF32/bf16 reduced-precision matmul is switched off around every float GEMM
(:func:`exact_float_matmul`).
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

__all__ = ["int8_available", "mm_int8", "mm_float", "exact_float_matmul", "float_dtype_for",
           "INT32_LIMIT", "COSTS"]

INT32_LIMIT = (1 << 31) - 1

#: Relative cost of one multiply-accumulate per GEMM kind and device type (int8 ``_int_mm``
#: = 1), measured on one core (CPU) and taken from the H100 datasheet ratios (CUDA). They only
#: rank alternatives; exactness never depends on them.
COSTS = {
    "cpu": {"int8": 1.0, "float32": 4.5, "float64": 8.5, "int64": 22.0, "elem": 90.0,
            "gather": 1400.0},
    "cuda": {"int8": 1.0, "float32": 30.0, "float64": 30.0, "int64": float("inf"),
             "elem": 300.0, "gather": 8000.0},
}


def costs(device: torch.device) -> dict:
    return COSTS.get(device.type, COSTS["cpu"])


@lru_cache(maxsize=None)
def _probe_int8(device_type: str, index) -> bool:
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    try:
        x = torch.ones(32, 32, dtype=torch.int8, device=device)
        r = torch._int_mm(x, x)
        return r.dtype == torch.int32 and int(r[0, 0]) == 32
    except Exception:  # noqa: BLE001 - any failure means: not available here
        return False


def int8_available(device: torch.device) -> bool:
    """Whether ``torch._int_mm`` (int8 × int8 → int32) runs on ``device``."""
    return _probe_int8(device.type, device.index)


def _pad_to(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if x.shape == (rows, cols):
        return x
    out = torch.zeros(rows, cols, dtype=x.dtype, device=x.device)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def mm_int8(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact ``x @ y`` of int8 matrices as int32 (the caller bounds ``K·max|x|·max|y|``).

    CUDA's kernel needs ``M > 16`` and ``K``, ``N`` multiples of 8: the operands are padded
    with zeros there, which adds nothing to the sums.
    """
    m, k = x.shape
    n = y.shape[1]
    if x.device.type == "cuda":
        mp, kp, np_ = max(m, 17), max(-(-k // 8) * 8, 16), max(-(-n // 8) * 8, 8)
        if (mp, kp, np_) != (m, k, n):
            x, y = _pad_to(x, mp, kp), _pad_to(y, kp, np_)
        r = None
        for xx, yy in ((_mm_ready(x), _mm_ready(y)), (x.contiguous(), y.contiguous()),
                       (x.contiguous(), y.t().contiguous().t())):
            try:  # the layouts the CUDA kernel accepts vary between versions
                r = torch._int_mm(xx, yy)
                break
            except RuntimeError:
                continue
        if r is None:
            raise RuntimeError("torch._int_mm refused every operand layout")
        return r[:m, :n] if r.shape != (m, n) else r
    return torch._int_mm(_mm_ready(x), _mm_ready(y))


def _mm_ready(x: torch.Tensor) -> torch.Tensor:
    """Row- or column-major operands go as they are (oneDNN takes both), others are copied.

    The strides must be the *standard* ones: torch calls ``[1, 2]`` with strides ``(1, 1)``
    contiguous, but ``torch._int_mm`` (2.13, CPU) then reads the wrong memory.
    """
    r, c = x.shape
    if x.stride() == (c, 1) or (x.stride() == (1, r) and not x.is_contiguous()):
        return x
    return x.clone(memory_format=torch.contiguous_format)


_PRECISION_ATTRS = (
    ("backends", "fp32_precision"),
    ("backends", "cuda", "matmul", "fp32_precision"),
    ("backends", "mkldnn", "matmul", "fp32_precision"),
    ("backends", "mkldnn", "fp32_precision"),
)


@contextlib.contextmanager
def exact_float_matmul():
    """Run float GEMMs at full IEEE precision (no TF32 or bf16 shortcuts), then restore."""
    saved = []
    prec = torch.get_float32_matmul_precision()
    if prec != "highest":
        torch.set_float32_matmul_precision("highest")
    for path in _PRECISION_ATTRS:
        obj = torch
        try:
            for name in path[:-1]:
                obj = getattr(obj, name)
            old = getattr(obj, path[-1])
        except AttributeError:
            continue
        if old not in ("ieee", "none"):
            try:
                setattr(obj, path[-1], "ieee")
                saved.append((obj, path[-1], old))
            except Exception:  # noqa: BLE001
                pass
    tf32 = torch.backends.cuda.matmul.allow_tf32
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
        for obj, name, old in saved:
            setattr(obj, name, old)
        if prec != "highest":
            torch.set_float32_matmul_precision(prec)


def float_dtype_for(bound: int) -> torch.dtype | None:
    """The float dtype whose GEMM is exact for partial sums up to ``bound`` (or ``None``)."""
    if bound < 1 << 24:
        return torch.float32
    if bound < 1 << 53:
        return torch.float64
    return None


def mm_float(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exact ``x @ y`` of int64 matrices through a float GEMM (the caller proved the bound)."""
    with exact_float_matmul():
        return torch.matmul(x.to(dtype), y.to(dtype)).to(torch.int64)
