"""The ``table`` family: .npy files, in-memory arrays, the shipped table, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.table import (
    DATA_DIR,
    TableFileNotFoundError,
    TableMultiplier,
    truncated_array_table,
)
from naive_models import naive_truncated_array


def test_shipped_file_is_the_generated_truncated_array_multiplier():
    stored = np.load(DATA_DIR / "mul8u_trunc7.npy")
    assert stored.shape == (256, 256) and np.issubdtype(stored.dtype, np.integer)
    assert np.array_equal(stored.astype(np.int64), truncated_array_table(8, 7))
    m = multiplier("table:path=mul8u_trunc7.npy")
    assert m.a_format.encoding == m.b_format.encoding == "unsigned"
    for a, b in [(255, 255), (1, 1), (128, 1), (100, 37), (0, 255)]:
        assert m.mul(a, b).item() == naive_truncated_array(a, b, n=8, t=7)


@pytest.mark.parametrize("spec", ["roup:p=1,r=4", "axbxp:l=2,sb=0", "exact:n=4,nb=3,sb=0"])
def test_round_trip_any_multiplier_through_a_file(tmp_path, spec):
    src = multiplier(spec)
    path = tmp_path / "t.npy"
    np.save(path, src.table().numpy())
    m = TableMultiplier(path=str(path), sa=src.a_format.signed, sb=src.b_format.signed)
    assert m.a_format == src.a_format and m.b_format == src.b_format
    assert torch.equal(m.table(), src.table())
    a, b = src.a_format.values()[:, None], src.b_format.values()[None, :]
    assert torch.equal(m.mul(a, b), src.mul(a, b))


def test_relative_path_in_working_directory(tmp_path, monkeypatch):
    np.save(tmp_path / "two.npy", np.arange(16, dtype=np.int32).reshape(4, 4))
    monkeypatch.chdir(tmp_path)
    m = multiplier("table:path=two.npy,sa=1")
    assert m.a_format.range == (-2, 1) and m.b_format.range == (0, 3)
    assert m.mul(-1, 2).item() == 3 * 4 + 2  # code of -1 is 3


def test_from_array_names_a_memory_spec():
    t = np.array([[0, 0], [0, 1]])
    m = TableMultiplier.from_array(t)
    assert m.spec.startswith("table:path=mem:") and len(m.path) == len("mem:") + 16
    assert multiplier(m.spec) == m
    assert TableMultiplier.from_array(t.copy()).spec == m.spec  # content-addressed
    named = TableMultiplier.from_array(np.zeros((4, 2), dtype=np.uint8), sa=True, name="z")
    assert named.spec == "table:path=mem:z,sa=1"
    assert named.a_format.bits == 2 and named.b_format.bits == 1
    with pytest.raises(ValueError, match="names no in-memory table"):
        multiplier("table:path=mem:unknown")


def test_missing_file():
    with pytest.raises(TableFileNotFoundError, match=r"path='nope\.npy' names no file"):
        multiplier("table:path=nope.npy")
    assert issubclass(TableFileNotFoundError, ValueError)
    assert issubclass(TableFileNotFoundError, FileNotFoundError)


@pytest.mark.parametrize("array, message", [
    (np.zeros((256, 255), dtype=np.int64), r"255 columns; allowed: 2\*\*bits columns"),
    (np.zeros((3, 4), dtype=np.int64), r"3 rows"),
    (np.zeros(16, dtype=np.int64), r"shape \(16,\); allowed: a 2-D table"),
    (np.zeros((2048, 2), dtype=np.int64), r"bits in \[1, 10\]"),
    (np.zeros((4, 4), dtype=np.float64), r"dtype float64; allowed: an integer dtype"),
    (np.zeros((4, 4), dtype=bool), r"dtype bool"),
    (np.full((2, 2), 2**63, dtype=np.uint64), r"above the int64 range"),
])
def test_bad_tables(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message):
        TableMultiplier(path=str(path))
    with pytest.raises(ValueError, match=message):
        TableMultiplier.from_array(array)


def test_unreadable_file(tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match="cannot read"):
        TableMultiplier(path=str(path))
