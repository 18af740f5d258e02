"""AcceleratorSoC (UART + HostLink + core) on Amaranth's simulator: frames over the serial
line, and the link's payload efficiency for bulk writes."""

from __future__ import annotations

import dataclasses
import random

import pytest
from mixpe.hw.link import LinkSimulation
from mixpe.hw.soc import AcceleratorSoC
from mixpe.sw import protocol as P
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.driver import Accelerator

TINY = CORE_PRESETS["tiny-2x2"]
DIV = 4


def test_frames_over_uart():
    sim = LinkSimulation(TINY, uart_divisor=DIV)
    acc = Accelerator(sim, config=TINY, timeout=0.05)  # identify over the line
    assert acc.info.config_hash == TINY.hash
    rng = random.Random(0)
    words = [rng.getrandbits(16) for _ in range(6)]
    acc.write_rows(0, 2, words)
    assert acc.read_rows(0, 2, 6) == words
    # a corrupted frame over the line gets ERR_CRC, the next good one an answer
    f = bytearray(P.encode_request(P.Opcode.STATUS, 77))
    f[-1] ^= 0x80
    sim.write(bytes(f) + P.encode_request(P.Opcode.STATUS, 78))
    rs = P.ResponseParser().feed(sim.read(2 * P.RESP_OVERHEAD + 20, 0.05))
    assert [(r.seq, r.status) for r in rs] == [(77, P.Status.ERR_CRC), (78, P.Status.OK)]


def test_bulk_write_efficiency():
    """WRITE_MEM bursts through the driver reach >= 90 % of the payload line rate."""
    cfg = dataclasses.replace(TINY, memory=dataclasses.replace(TINY.memory, wsp_depth=1024))
    sim = LinkSimulation(cfg, uart_divisor=DIV)
    acc = Accelerator(sim, config=cfg, timeout=0.05)
    rng = random.Random(1)
    words = [rng.getrandbits(16) for _ in range(768)]  # 3 KiB of payload data
    t0 = sim.clock()
    acc.write_rows(0, 0, words)
    dt = sim.clock() - t0
    eff = 4 * len(words) / (dt * sim.line_rate)
    print(f"bulk write: {4 * len(words)} B in {dt * sim.clk_hz:.0f} cycles, "
          f"{eff:.1%} of the line rate")
    assert eff >= 0.90
    assert acc.stats.retries == 0
    assert acc.read_rows(0, 700, 8) == [w & 0xFFFF for w in words[700:708]]


def test_parameters():
    with pytest.raises(ValueError, match="divisor"):
        AcceleratorSoC(TINY, clocks_per_bit=2)
    with pytest.raises(TypeError, match="config"):
        AcceleratorSoC("tiny", clocks_per_bit=8)
