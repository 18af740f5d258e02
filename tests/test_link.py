"""HostLink + AcceleratorCore on Amaranth's simulator (byte level): frames, errors, resync.

Every response is checked against :class:`mixpe.sw.protocol.BoardModel` (the Python model
of the board) where the protocol fixes it byte for byte.
"""

from __future__ import annotations

import random
import struct

import pytest
from mixpe.hw.link import HostLink, LinkSimulation
from mixpe.sw import isa
from mixpe.sw import protocol as P
from mixpe.sw.core_config import CORE_PRESETS, MEMORIES

TINY = CORE_PRESETS["tiny-2x2"]


class Board:
    """A LinkSimulation plus a BoardModel fed the same bytes."""

    def __init__(self, cfg=TINY, **kw):
        self.sim = LinkSimulation(cfg, **kw)
        lk = self.sim.dut.link
        self.model = P.BoardModel(cfg, max_payload=lk.max_payload, in_words=lk.in_words,
                                  out_words=lk.out_words)
        self.parser = P.ResponseParser()
        self.seq = 0

    def send(self, raw: bytes, n_resp=1, timeout=0.02):
        """Send raw bytes, return the decoded responses (n_resp expected)."""
        self.sim.write(raw)
        got = []
        for _ in range(200):
            got += self.parser.feed(self.sim.read(1 << 16, timeout / 200))
            if len(got) >= n_resp and not self.sim._in:
                break
        return got

    def request(self, op, payload=b"", check_model=True):
        self.seq = (self.seq + 1) & 0xFF
        frame = P.encode_request(op, self.seq, payload)
        (r,) = self.send(frame)
        assert r.seq == self.seq and r.opcode == int(op)
        if check_model:
            mr = P.ResponseParser().feed(self.model.feed(frame))
            assert len(mr) == 1
            assert (r.status, r.payload) == (mr[0].status, mr[0].payload), (op, r, mr[0])
        return r

    def checksum(self):
        """Read every scratchpad row back (READ_MEM) → a tuple of all words."""
        out = []
        for i, name in enumerate(MEMORIES):
            depth = TINY.memory.depth(name)
            rw = TINY.row_words(name)
            step = max(1, (P.MAX_PAYLOAD // 4) // rw)
            for a in range(0, depth, step):
                n = min(step, depth - a)
                r = self.request(P.Opcode.READ_MEM, P.read_mem_payload(i, a, n))
                assert r.ok
                out.append(r.payload)
        return tuple(out)


@pytest.fixture(scope="module")
def board():
    return Board()


def test_identify(board):
    r = board.request(P.Opcode.IDENTIFY)
    assert r.ok
    info = P.unpack_identify(r.payload)
    assert info.config_hash == TINY.hash
    assert info.version == P.VERSION and info.max_payload == P.MAX_PAYLOAD


def test_write_read_memories(board):
    rng = random.Random(1)
    for i, name in enumerate(MEMORIES):
        rw = TINY.row_words(name)
        depth = TINY.memory.depth(name)
        rows = min(5, depth)
        addr = depth - rows
        words = [rng.getrandbits(32) for _ in range(rows * rw)]
        r = board.request(P.Opcode.WRITE_MEM, P.write_mem_payload(i, addr, rows, words))
        assert r.ok and r.payload == b""
        r = board.request(P.Opcode.READ_MEM, P.read_mem_payload(i, addr, rows))
        assert r.ok
        got = list(struct.unpack(f"<{rows * rw}I", r.payload))
        # the memory keeps only row_bits of a row: compare through the model's packing
        mr = P.ResponseParser().feed(board.model.feed(b""))
        assert not mr
        exp = isa.pack_rows(isa.Mem(i), isa.unpack_rows(isa.Mem(i), words, TINY, rows), TINY)
        assert got == exp


def test_write_prog_keeps_program_across_micro_programs(board):
    prog = [isa.encode(isa.assemble("NOP")), isa.encode(isa.assemble("STORE mem=wsp addr=0 "
                                                                     "rows=1")),
            isa.encode(isa.Instr(isa.Opcode.END))]
    assert board.request(P.Opcode.WRITE_PROG, P.write_prog_payload(0, prog)).ok
    # a WRITE_MEM runs a micro-program in imem[0..1]; the host program must survive it
    assert board.request(P.Opcode.WRITE_MEM, P.write_mem_payload(0, 0, 1, [0x1234])).ok
    assert board.request(P.Opcode.RUN).ok
    r = board.request(P.Opcode.STREAM_OUT, P.stream_out_payload(0, 16), check_model=False)
    assert r.ok and r.payload[4:] == struct.pack("<I", 0x1234)
    st = P.unpack_status(board.request(P.Opcode.STATUS, check_model=False).payload)
    assert not st.running and st.core_done and st.out_count == 1
    c = dict(zip(P.LINK_COUNTERS, struct.unpack(
        "<8I", board.request(P.Opcode.COUNTERS, check_model=False).payload)))
    assert c["run_cycles"] == st.run_cycles > 0


def test_error_paths_change_nothing(board):
    before = board.checksum()
    wm = P.write_mem_payload(0, 0, 2, [0xFFFF, 0xFFFF])
    good = P.encode_request(P.Opcode.WRITE_MEM, 9, wm)
    # bad CRC (a flipped payload bit)
    bad = bytearray(good)
    bad[10] ^= 0x04
    (r,) = board.send(bytes(bad))
    assert r.status == P.Status.ERR_CRC
    # unknown opcode
    (r,) = board.send(P.encode_request(0x55, 3, b"abc"))
    assert r.status == P.Status.ERR_OPCODE and r.seq == 3
    # length beyond the buffer: rejected right after the header
    (r,) = board.send(P.SYNC + struct.pack("<BBH", P.Opcode.WRITE_MEM, 4, P.MAX_PAYLOAD + 4))
    assert r.status == P.Status.ERR_LENGTH
    # length wrong for the opcode (rows say 2, one data word)
    (r,) = board.send(P.encode_request(P.Opcode.WRITE_MEM, 5, P.write_mem_payload(0, 0, 2, [1])))
    assert r.status == P.Status.ERR_LENGTH
    # out-of-range address / memory
    for p in (P.write_mem_payload(0, TINY.memory.wsp_depth - 1, 2, [1, 2]),
              P.write_mem_payload(7, 0, 1, [1])):
        (r,) = board.send(P.encode_request(P.Opcode.WRITE_MEM, 6, p))
        assert r.status == P.Status.ERR_ARG
    # truncated body: the board answers ERR_TIMEOUT after its byte timeout
    (r,) = board.send(good[:-5], timeout=0.05)
    assert r.status == P.Status.ERR_TIMEOUT
    # garbage (with false sync markers) between frames, then a good frame
    junk = bytes([0xA5, 0x00, 0x5A, 0xA5, 0x13, 0x77])
    rs = board.send(junk + P.encode_request(P.Opcode.IDENTIFY, 8))
    assert rs[-1].ok and rs[-1].seq == 8
    assert board.checksum() == before
    c = dict(zip(P.LINK_COUNTERS, struct.unpack(
        "<8I", board.request(P.Opcode.COUNTERS, check_model=False).payload)))
    assert c["err_crc"] >= 1 and c["err_opcode"] >= 1 and c["err_timeout"] >= 1
    assert c["err_length"] >= 2 and c["err_other"] >= 2


def test_parameters():
    with pytest.raises(ValueError, match="max_payload"):
        HostLink(TINY, max_payload=100)
    with pytest.raises(ValueError, match="timeout_cycles"):
        HostLink(TINY, timeout_cycles=3)
    with pytest.raises(TypeError):
        HostLink("tiny")
