"""The host driver on the gateware (HostLink + AcceleratorCore on Amaranth's simulator, byte
level): GEMM and conv end to end, bit-exact against ``core_ref.run_program``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from mixpe.hw.link import LinkSimulation
from mixpe.sw.compiler import compile_conv2d, compile_gemm
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.core_ref import run_program
from mixpe.sw.driver import Accelerator, ConfigMismatchError
from mixpe.sw.requant import Requant

TINY = CORE_PRESETS["tiny-2x2"]


def _codes(g, shape):
    return torch.randint(-128, 128, shape, generator=g) & 0xFF


@pytest.fixture(scope="module")
def acc():
    sim = LinkSimulation(TINY, link_kw=dict(in_words=16, out_words=16, max_payload=64))
    return Accelerator(sim, config=TINY, timeout=0.05)


def test_gemm_end_to_end(acc):
    g = torch.Generator().manual_seed(1)
    prog = compile_gemm(_codes(g, (5, 7)), _B, TINY, read_counters=True)
    words, info = acc.run_program(prog)
    ref, _ = run_program(prog)
    assert torch.equal(prog.outputs(words), prog.outputs(ref))
    cnt = prog.counters(words)
    assert cnt["macs"] == prog.counters(ref)["macs"] and cnt["cycles"] > 0
    assert info["run_cycles"] >= cnt["cycles"]
    # the same weights again: only activations travel
    prog2 = compile_gemm(_codes(g, (5, 7)), _B, TINY)
    words2, info2 = acc.run_program(prog2)
    assert words2 == run_program(prog2)[0]
    assert info2["preloaded_rows"] == 0


_B = None


@pytest.fixture(autouse=True)
def _weights():
    global _B
    g = torch.Generator().manual_seed(2)
    _B = _codes(g, (7, 3))


def test_conv_end_to_end(acc):
    g = torch.Generator().manual_seed(4)
    x = _codes(g, (1, 2, 4, 4))
    w = _codes(g, (3, 2, 3, 3))
    rq = Requant(bias=torch.tensor([5, -1, 0]), mult=5, shift=7, relu=False, lo=-128, hi=127)
    prog = compile_conv2d(x, w, TINY, padding=1, requant=rq, allow_segments=True)
    words, _ = acc.run_program(prog)
    ref, _ = run_program(prog, imem_depth=TINY.memory.imem_depth)
    assert torch.equal(prog.outputs(words), prog.outputs(ref))


def test_identify_refuses_other_config():
    other = dataclasses.replace(TINY, memory=dataclasses.replace(TINY.memory, acc_depth=64))
    with pytest.raises(ConfigMismatchError):
        Accelerator(LinkSimulation(TINY), config=other, timeout=0.05)
