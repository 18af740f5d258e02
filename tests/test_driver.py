"""The host driver on the Python board model (``model://``): GEMM and conv end to end
(bit-exact against ``core_ref.run_program``), weight residency, identify, retries."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from mixpe.sw import protocol as P
from mixpe.sw.compiler import compile_conv2d, compile_gemm
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.core_ref import run_program
from mixpe.sw.driver import Accelerator, ConfigMismatchError, ModelTransport, connect
from mixpe.sw.requant import Requant

TINY = CORE_PRESETS["tiny-2x2"]


def _codes(g, shape, lo=-128, hi=127):
    return torch.randint(lo, hi + 1, shape, generator=g) & 0xFF


def _gemm(seed, m=5, k=7, n=3, **kw):
    g = torch.Generator().manual_seed(seed)
    return compile_gemm(_codes(g, (m, k)), _codes(g, (k, n)), TINY, **kw)


def test_gemm_bit_exact():
    acc = connect("model://tiny-2x2")
    prog = _gemm(0, read_counters=True)
    words, info = acc.run_program(prog)
    ref, _ = run_program(prog)
    assert words == ref
    assert torch.equal(prog.outputs(words), prog.outputs(ref))
    assert info["segments"] >= 1


def test_conv_requant_bit_exact():
    acc = connect("model://tiny-2x2")
    g = torch.Generator().manual_seed(3)
    x = _codes(g, (1, 3, 5, 5))
    w = _codes(g, (4, 3, 3, 3))
    rq = Requant(bias=torch.tensor([3, -2, 0, 7]), mult=3, shift=6, relu=True, lo=0, hi=127)
    prog = compile_conv2d(x, w, TINY, padding=1, requant=rq, allow_segments=True)
    words, _ = acc.run_program(prog)
    ref, _ = run_program(prog, imem_depth=TINY.memory.imem_depth)
    assert torch.equal(prog.outputs(words), prog.outputs(ref))


def test_weights_stay_resident():
    """A second inference with the same weights sends only activations (fewer bytes)."""
    acc = connect("model://tiny-2x2")
    g = torch.Generator().manual_seed(5)
    b = _codes(g, (4, 2))
    a1, a2 = _codes(g, (3, 4)), _codes(g, (3, 4))
    p1, p2 = compile_gemm(a1, b, TINY), compile_gemm(a2, b, TINY)
    w1, i1 = acc.run_program(p1)
    w2, i2 = acc.run_program(p2)
    assert i1["preloaded_rows"] > 0 and i2["preloaded_rows"] == 0
    assert i2["bytes_out"] < i1["bytes_out"]
    assert w1 == run_program(p1)[0] and w2 == run_program(p2)[0]


def test_identify_refuses_other_config():
    other = dataclasses.replace(TINY, memory=dataclasses.replace(TINY.memory, acc_depth=64))
    t = ModelTransport(TINY)
    with pytest.raises(ConfigMismatchError):
        Accelerator(t, config=other)
    acc = Accelerator(t, config=TINY)
    assert acc.info.config_hash == TINY.hash


def test_retries_over_a_noisy_link():
    """Random bit flips, drops and garbage on the host→board bytes: results stay exact."""
    rng = random.Random(11)

    def corrupt(data):
        data = bytearray(data)
        r = rng.random()
        if r < 0.15 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif r < 0.2 and len(data) > 4:
            del data[rng.randrange(len(data)):]
        elif r < 0.25:
            data = bytearray(rng.randbytes(rng.randrange(1, 6))) + data
        return bytes(data)

    t = ModelTransport(TINY, corrupt=corrupt)
    acc = Accelerator(t, config=TINY, timeout=0.01, retries=30)
    for seed in range(3):
        prog = _gemm(seed, m=6, k=9, n=4)
        words, _ = acc.run_program(prog)
        assert words == run_program(prog)[0]
    assert acc.stats.retries > 0


def test_bad_ports():
    with pytest.raises(ValueError, match="port"):
        connect("model://nope")
    with pytest.raises(ValueError, match="scheme"):
        connect("http://x")
    with pytest.raises(ValueError, match="tcp"):
        connect("tcp://localhost")


def test_doctests():
    import doctest

    import mixpe.hw.uart
    import mixpe.sw.driver
    import mixpe.sw.protocol
    for mod in (mixpe.sw.protocol, mixpe.sw.driver, mixpe.hw.uart):
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__


def test_serial_transport_over_a_pty():
    """SerialTransport (pyserial) on a pseudo-terminal served by the board model: the path a
    real board takes, with a GEMM end to end."""
    import os
    import threading
    import tty

    from mixpe.sw.driver import SerialTransport

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    model = P.BoardModel(TINY)
    stop = threading.Event()

    def serve():
        import select
        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.05)
            if r:
                data = os.read(master, 4096)
                out = model.feed(data)
                if out:
                    os.write(master, out)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        t = SerialTransport(os.ttyname(slave), baud=3_000_000)
        acc = Accelerator(t, config=TINY, timeout=1.0)
        prog = _gemm(4, m=4, k=5, n=3)
        words, _ = acc.run_program(prog)
        assert words == run_program(prog)[0]
        acc.close()
    finally:
        stop.set()
        th.join(2)
        os.close(master)
        os.close(slave)
