"""Link robustness fuzz on the gateware (Amaranth simulator, a few hundred frames) and on
the board model (thousands): random good frames, flipped bits, truncations, wrong lengths,
unknown opcodes, garbage between frames. See :func:`mixpe.sw.driver.fuzz_link` for what is
checked (valid responses or clean timeouts, good frames answered afterwards, a memory
checksum proving no rejected frame wrote). The >= 10,000-frame run is
``sim/test_link_fuzz.py`` on the Verilator-simulated board."""

from __future__ import annotations

import pytest
from mixpe.hw.link import LinkSimulation
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.driver import ModelTransport, fuzz_link

TINY = CORE_PRESETS["tiny-2x2"]


def _check(counts, frames):
    bad = sum(counts.get(k, 0) for k in ("flip", "truncate", "length", "length_crc", "opcode",
                                         "garbage"))
    goodn = sum(counts.get(k, 0) for k in ("good_write", "good_read", "good_info"))
    assert bad + goodn == frames
    assert bad > frames // 3 and goodn > frames // 10
    lc = counts["link_counters"]
    assert lc["err_crc"] > 0 and lc["err_opcode"] > 0 and lc["err_length"] > 0


def test_fuzz_gateware():
    frames = 250
    sim = LinkSimulation(TINY, link_kw=dict(timeout_cycles=500))
    counts = fuzz_link(sim, TINY, frames=frames, seed=1, timeout=0.002)
    _check(counts, frames)
    assert counts["link_counters"]["err_timeout"] > 0


@pytest.mark.parametrize("seed,frames", [(0, 10_000), (1, 2000)])
def test_fuzz_model(seed, frames):
    counts = fuzz_link(ModelTransport(TINY), TINY, frames=frames, seed=seed, timeout=0.01)
    _check(counts, frames)
