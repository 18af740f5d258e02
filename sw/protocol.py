"""The host link's framed protocol (``docs/protocol.md``): frames, payloads, a board model.

Every frame, in both directions, is::

    request:   A5 5A | opcode | seq | len (u16 LE) | payload (len bytes) | crc32 (u32 LE)
    response:  A5 5A | opcode | status | seq | len (u16 LE) | payload     | crc32 (u32 LE)

The CRC is CRC-32/ISO-HDLC (``zlib.crc32``: reflected polynomial 0x04C11DB7, initial and
final XOR 0xFFFFFFFF) over everything after the sync marker and before the CRC. The board
(``hw/link.py``) buffers a request's payload, checks the CRC, then the opcode, then the
length and arguments, and only then acts: a rejected frame changes nothing. A response echoes
the request's opcode and sequence number and carries a :class:`Status`.

:class:`BoardModel` is a pure-Python model of the board (link + core, with
:class:`mixpe.sw.core_ref.CoreModel` as the core): it answers byte streams exactly as the
gateware does, except for timing (no timeouts, no link counters of UART errors) and the
timing counters of ``STORE cnt``. The driver's unit tests run on it.

This module never imports Amaranth.

>>> f = encode_request(Opcode.IDENTIFY, 7)
>>> f.hex(" ")
'a5 5a 01 07 00 00 fc ae b7 9c'
>>> parse_request(f)[:3]
(<Opcode.IDENTIFY: 1>, 7, b'')
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from . import isa
from .core_config import MEMORIES, CoreConfig
from .isa import Mem
from .isa import Opcode as CoreOpcode

__all__ = [
    "SYNC", "VERSION", "MAX_PAYLOAD", "REQ_HEADER", "RESP_HEADER", "CRC_BYTES",
    "Opcode", "Status", "ProtocolError", "Response", "crc32",
    "encode_request", "parse_request", "encode_response", "ResponseParser",
    "IdentifyInfo", "StatusInfo", "LINK_COUNTERS",
    "pack_identify", "unpack_identify", "pack_status", "unpack_status",
    "write_mem_payload", "read_mem_payload", "write_prog_payload", "stream_in_payload",
    "stream_out_payload", "BoardModel",
]

#: Sync marker that starts every frame.
SYNC = b"\xa5\x5a"
#: Protocol version (sent by IDENTIFY).
VERSION = 1
#: Default largest payload (bytes) of a frame in either direction (the board's frame buffer).
MAX_PAYLOAD = 1024
#: Request header bytes after the sync marker (opcode, seq, len).
REQ_HEADER = 4
#: Response header bytes after the sync marker (opcode, status, seq, len).
RESP_HEADER = 5
CRC_BYTES = 4
#: Overhead of a request frame (sync + header + CRC).
REQ_OVERHEAD = len(SYNC) + REQ_HEADER + CRC_BYTES
#: Overhead of a response frame.
RESP_OVERHEAD = len(SYNC) + RESP_HEADER + CRC_BYTES


class Opcode(enum.IntEnum):
    """Request opcodes (payload layouts in ``docs/protocol.md``)."""

    IDENTIFY = 0x01    #: → config hash, version, buffer sizes
    STATUS = 0x02      #: → flags, stream buffer levels, run cycles
    COUNTERS = 0x03    #: → link counters (:data:`LINK_COUNTERS`)
    WRITE_MEM = 0x10   #: mem, addr, rows, row words → scratchpad rows (a LOAD on the core)
    READ_MEM = 0x11    #: mem, addr, rows → row words (a STORE on the core)
    WRITE_PROG = 0x12  #: imem addr, instruction words → imem
    RUN = 0x20         #: start the program at imem[0]; clears the stream buffers
    STREAM_IN = 0x21   #: offset, words → the program's i_stream
    STREAM_OUT = 0x22  #: offset (ack), max words → flags, in_free, the program's o_stream words
    ABORT = 0x2F       #: reset the core's registers (not its memories), stop the run


class Status(enum.IntEnum):
    """Response status codes."""

    OK = 0
    ERR_CRC = 1       #: CRC mismatch (the frame was ignored)
    ERR_OPCODE = 2    #: unknown opcode
    ERR_LENGTH = 3    #: length too large for the buffer, or wrong for the opcode
    ERR_TIMEOUT = 4   #: the body did not arrive within the board's byte timeout
    ERR_BUSY = 5      #: the core runs a program (WRITE_MEM/READ_MEM/WRITE_PROG/RUN refused)
    ERR_ARG = 6       #: an argument is out of range (memory, rows, address, stream offset)
    ERR_FULL = 7      #: STREAM_IN words do not fit the input buffer now


#: Link counters returned by COUNTERS, u32 each, in order.
LINK_COUNTERS = ("frames_ok", "err_crc", "err_opcode", "err_length", "err_timeout",
                 "err_other", "rx_errors", "run_cycles")

#: Flag bits of STATUS / STREAM_OUT responses.
FLAG_RUNNING = 1
FLAG_CORE_BUSY = 2
FLAG_CORE_DONE = 4


class ProtocolError(Exception):
    """A malformed frame or an unexpected response."""


def crc32(data: bytes) -> int:
    """CRC-32 of the frame bytes after the sync marker (``zlib.crc32``)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _check_u8(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
        raise ValueError(f"{name} must be an integer in [0, 255], not {v!r}")
    return v


def encode_request(opcode: int, seq: int, payload: bytes = b"", *,
                   max_payload: int = 0xFFFF) -> bytes:
    """Encode a request frame (``opcode`` may be any byte value: tests send unknown ones)."""
    _check_u8("opcode", int(opcode))
    _check_u8("seq", seq)
    payload = bytes(payload)
    if len(payload) > max_payload:
        raise ValueError(f"payload must be at most {max_payload} bytes, not {len(payload)}")
    body = struct.pack("<BBH", int(opcode), seq, len(payload)) + payload
    return SYNC + body + struct.pack("<I", crc32(body))


def parse_request(frame: bytes):
    """Decode one complete request frame → ``(opcode, seq, payload)``; raises ProtocolError."""
    frame = bytes(frame)
    if len(frame) < REQ_OVERHEAD or frame[:2] != SYNC:
        raise ProtocolError("not a request frame")
    op, seq, n = struct.unpack_from("<BBH", frame, 2)
    if len(frame) != REQ_OVERHEAD + n:
        raise ProtocolError(f"frame length {len(frame)} does not match len={n}")
    body = frame[2:2 + REQ_HEADER + n]
    if crc32(body) != struct.unpack_from("<I", frame, 2 + REQ_HEADER + n)[0]:
        raise ProtocolError("bad CRC")
    try:
        op = Opcode(op)
    except ValueError:
        pass
    return op, seq, body[REQ_HEADER:]


@dataclass(frozen=True)
class Response:
    """A decoded response frame."""

    opcode: int
    status: Status
    seq: int
    payload: bytes

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


def encode_response(opcode: int, status: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BBBH", opcode & 0xFF, int(status), seq & 0xFF, len(payload)) + \
        bytes(payload)
    return SYNC + body + struct.pack("<I", crc32(body))


class ResponseParser:
    """Incremental decoder of the board's byte stream into :class:`Response` s.

    Bytes before a sync marker and frames with a bad CRC are skipped (counted in
    ``skipped_bytes`` / ``bad_frames``); after a bad frame, decoding resumes one byte after
    its sync marker, so a good frame hidden inside the bad one's bytes is still found.
    """

    def __init__(self, max_payload: int = 0xFFFF):
        self._buf = bytearray()
        self.max_payload = max_payload
        self.skipped_bytes = 0
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[Response]:
        self._buf += data
        out = []
        buf = self._buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.skipped_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if i:
                self.skipped_bytes += i
                del buf[:i]
            if len(buf) < 2 + RESP_HEADER:
                break
            op, st, seq, n = struct.unpack_from("<BBBH", buf, 2)
            if n > self.max_payload:
                self.bad_frames += 1
                del buf[:1]
                continue
            end = 2 + RESP_HEADER + n + CRC_BYTES
            if len(buf) < end:
                break
            body = bytes(buf[2:2 + RESP_HEADER + n])
            if crc32(body) != struct.unpack_from("<I", buf, end - CRC_BYTES)[0]:
                self.bad_frames += 1
                del buf[:1]
                continue
            try:
                status = Status(st)
            except ValueError:
                status = st
            out.append(Response(op, status, seq, body[RESP_HEADER:]))
            del buf[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes held (an incomplete frame)."""
        return len(self._buf)


# -- payloads ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IdentifyInfo:
    """IDENTIFY response: the configuration hash and the board's buffer sizes."""

    config_hash: str   # 64 hex digits, CoreConfig.hash
    version: int
    max_payload: int   # bytes
    in_words: int      # input stream buffer (words)
    out_words: int     # output stream buffer (words)


def pack_identify(info: IdentifyInfo) -> bytes:
    return bytes.fromhex(info.config_hash) + struct.pack(
        "<BBHHH", info.version, 0, info.max_payload, info.in_words, info.out_words)


def unpack_identify(p: bytes) -> IdentifyInfo:
    if len(p) != 40:
        raise ProtocolError(f"IDENTIFY payload must be 40 bytes, got {len(p)}")
    v, _, mp, iw, ow = struct.unpack_from("<BBHHH", p, 32)
    return IdentifyInfo(p[:32].hex(), v, mp, iw, ow)


@dataclass(frozen=True)
class StatusInfo:
    """STATUS response."""

    running: bool
    core_busy: bool
    core_done: bool
    in_free: int
    out_level: int
    in_count: int
    out_count: int
    run_cycles: int


def pack_status(s: StatusInfo) -> bytes:
    flags = FLAG_RUNNING * s.running | FLAG_CORE_BUSY * s.core_busy | FLAG_CORE_DONE * s.core_done
    return struct.pack("<BBHHHIII", flags, 0, s.in_free, s.out_level, 0, s.in_count & 0xFFFFFFFF,
                       s.out_count & 0xFFFFFFFF, s.run_cycles & 0xFFFFFFFF)


def unpack_status(p: bytes) -> StatusInfo:
    if len(p) != 20:
        raise ProtocolError(f"STATUS payload must be 20 bytes, got {len(p)}")
    f, _, fr, lv, _, ic, oc, rc = struct.unpack("<BBHHHIII", p)
    return StatusInfo(bool(f & FLAG_RUNNING), bool(f & FLAG_CORE_BUSY), bool(f & FLAG_CORE_DONE),
                      fr, lv, ic, oc, rc)


def _words(words) -> bytes:
    return struct.pack(f"<{len(words)}I", *[int(w) & 0xFFFFFFFF for w in words])


def write_mem_payload(mem, addr: int, rows: int, words) -> bytes:
    """WRITE_MEM payload: ``mem u8, 0, addr u16, rows u16, 0 u16, words``."""
    return struct.pack("<BBHHH", int(mem), 0, addr, rows, 0) + _words(words)


def read_mem_payload(mem, addr: int, rows: int) -> bytes:
    return struct.pack("<BBHHH", int(mem), 0, addr, rows, 0)


def write_prog_payload(addr: int, instr_words) -> bytes:
    """WRITE_PROG payload: ``addr u16, 0 u16``, then each 64-bit instruction as two u32 LE."""
    ws = []
    for w in instr_words:
        w = int(w)
        ws += [w & 0xFFFFFFFF, w >> 32]
    return struct.pack("<HH", addr, 0) + _words(ws)


def stream_in_payload(offset: int, words) -> bytes:
    return struct.pack("<I", offset & 0xFFFFFFFF) + _words(words)


def stream_out_payload(offset: int, max_words: int) -> bytes:
    return struct.pack("<IHH", offset & 0xFFFFFFFF, max_words, 0)


# -- board model -------------------------------------------------------------------------------

class BoardModel:
    """A pure-Python board: the protocol engine of ``hw/link.py`` over a :class:`CoreModel`.

    ``feed(data)`` takes host bytes and returns the response bytes. The core model executes
    the RUN program instruction by instruction as input words arrive (a LOAD waits for its
    words), with the buffer sizes of the gateware's defaults.
    """

    def __init__(self, cfg: CoreConfig, *, max_payload: int = MAX_PAYLOAD, in_words: int = 512,
                 out_words: int = 512):
        from .core_ref import CoreModel  # torch-heavy; imported lazily
        self.cfg = cfg
        self.max_payload = max_payload
        self.in_words = in_words
        self.out_words = out_words
        self.core = CoreModel(cfg)
        self.imem = [0] * cfg.memory.imem_depth
        self.counters = {k: 0 for k in LINK_COUNTERS}
        self._buf = bytearray()
        self._reset_stream()
        self.running = False

    def _reset_stream(self):
        self.in_fifo: list[int] = []
        self.out_buf: list[int] = []  # words from out_base on
        self.in_count = self.out_count = self.out_base = 0
        self.pc = 0

    # the core
    def _advance(self):
        cfg = self.cfg
        while self.running:
            ins = isa.decode(self.imem[self.pc])
            if ins.op == CoreOpcode.LOAD:
                need = ins.rows * cfg.row_words(Mem(ins.mem).name.lower())
                if len(self.in_fifo) < need:
                    return
            out: list[int] = []
            pos = self.core.step(ins, self.in_fifo, 0, out)
            del self.in_fifo[:pos]
            self.out_buf += out
            self.out_count += len(out)
            self.pc += 1
            if self.core.done or self.pc >= len(self.imem):
                self.running = False

    def _status(self) -> StatusInfo:
        return StatusInfo(self.running, self.running, not self.running, self.in_words -
                          len(self.in_fifo), len(self.out_buf), self.in_count & 0xFFFF,
                          self.out_count & 0xFFFF, 0)

    def feed(self, data: bytes) -> bytes:
        """Take host bytes; return the board's response bytes (complete frames only)."""
        self._buf += data
        out = bytearray()
        buf = self._buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                del buf[:max(0, len(buf) - 1)]
                break
            del buf[:i]
            if len(buf) < 2 + REQ_HEADER:
                break
            op, seq, n = struct.unpack_from("<BBH", buf, 2)
            if n > self.max_payload:
                self.counters["err_length"] += 1
                out += encode_response(op, Status.ERR_LENGTH, seq)
                del buf[:2 + REQ_HEADER]
                continue
            end = 2 + REQ_HEADER + n + CRC_BYTES
            if len(buf) < end:
                break
            body = bytes(buf[2:2 + REQ_HEADER + n])
            crc = struct.unpack_from("<I", buf, end - CRC_BYTES)[0]
            del buf[:end]
            if crc32(body) != crc:
                self.counters["err_crc"] += 1
                out += encode_response(op, Status.ERR_CRC, seq)
                continue
            status, payload = self._execute(op, body[REQ_HEADER:])
            key = {Status.OK: "frames_ok", Status.ERR_OPCODE: "err_opcode",
                   Status.ERR_LENGTH: "err_length"}.get(status, "err_other")
            self.counters[key] += 1
            out += encode_response(op, status, seq, payload)
        return bytes(out)

    def timeout(self) -> bytes:
        """The board's byte timeout expired: a pending partial frame gets ERR_TIMEOUT."""
        buf = self._buf
        if len(buf) >= 2 and buf[:2] == SYNC:
            op = buf[2] if len(buf) > 2 else 0
            seq = buf[3] if len(buf) > 3 else 0
            buf.clear()
            self.counters["err_timeout"] += 1
            return encode_response(op, Status.ERR_TIMEOUT, seq)
        buf.clear()
        return b""

    def _mem_check(self, mem, addr, rows):
        if mem >= len(MEMORIES) or rows < 1 or addr + rows > self.cfg.memory.depth(
                MEMORIES[mem]):
            return False
        return True

    def _execute(self, op, p: bytes):
        cfg = self.cfg
        n = len(p)
        try:
            op = Opcode(op)
        except ValueError:
            return Status.ERR_OPCODE, b""
        if op in (Opcode.IDENTIFY, Opcode.STATUS, Opcode.COUNTERS, Opcode.RUN, Opcode.ABORT):
            if n:
                return Status.ERR_LENGTH, b""
        if op == Opcode.IDENTIFY:
            return Status.OK, pack_identify(IdentifyInfo(cfg.hash, VERSION, self.max_payload,
                                                         self.in_words, self.out_words))
        if op == Opcode.STATUS:
            return Status.OK, pack_status(self._status())
        if op == Opcode.COUNTERS:
            return Status.OK, struct.pack(f"<{len(LINK_COUNTERS)}I",
                                          *[self.counters[k] & 0xFFFFFFFF
                                            for k in LINK_COUNTERS])
        if op == Opcode.ABORT:
            self.running = False
            self._reset_stream()
            return Status.OK, b""
        if op in (Opcode.WRITE_MEM, Opcode.READ_MEM):
            if n < 8 or (op == Opcode.READ_MEM and n != 8):
                return Status.ERR_LENGTH, b""
            mem, _, addr, rows, _ = struct.unpack_from("<BBHHH", p)
            if mem >= len(MEMORIES):
                return Status.ERR_ARG, b""
            rw = cfg.row_words(MEMORIES[mem])
            if op == Opcode.WRITE_MEM and n != 8 + 4 * rows * rw:
                return Status.ERR_LENGTH, b""
            if op == Opcode.READ_MEM and 4 * rows * rw > self.max_payload:
                return Status.ERR_ARG, b""
            if self.running:
                return Status.ERR_BUSY, b""
            if not self._mem_check(mem, addr, rows):
                return Status.ERR_ARG, b""
            ins = isa.Instr(CoreOpcode.LOAD if op == Opcode.WRITE_MEM else CoreOpcode.STORE,
                            mem=mem, addr=addr, rows=rows)
            words = list(struct.unpack_from(f"<{(n - 8) // 4}I", p, 8))
            o: list[int] = []
            self.core.step(ins, words, 0, o)
            return Status.OK, _words(o)
        if op == Opcode.WRITE_PROG:
            if n < 12 or (n - 4) % 8:
                return Status.ERR_LENGTH, b""
            addr = struct.unpack_from("<H", p)[0]
            k = (n - 4) // 8
            if self.running:
                return Status.ERR_BUSY, b""
            if addr + k > len(self.imem):
                return Status.ERR_ARG, b""
            ws = struct.unpack_from(f"<{2 * k}I", p, 4)
            for j in range(k):
                self.imem[addr + j] = ws[2 * j] | ws[2 * j + 1] << 32
            return Status.OK, b""
        if op == Opcode.RUN:
            if self.running:
                return Status.ERR_BUSY, b""
            self._reset_stream()
            self.core.done = False
            self.running = True
            self._advance()
            return Status.OK, b""
        if op == Opcode.STREAM_IN:
            if n < 8 or n % 4:
                return Status.ERR_LENGTH, b""
            off = struct.unpack_from("<I", p)[0] & 0xFFFF  # offsets are compared mod 2**16
            k = (n - 4) // 4
            if off == self.in_count & 0xFFFF:
                if k > self.in_words - len(self.in_fifo):
                    return Status.ERR_FULL, b""
                self.in_fifo += struct.unpack_from(f"<{k}I", p, 4)
                self.in_count += k
                self._advance()
            elif not ((self.in_count - off) & 0xFFFF) >= k:
                return Status.ERR_ARG, b""
            s = self._status()
            return Status.OK, struct.pack("<HH", s.in_free, s.out_level)
        if op == Opcode.STREAM_OUT:
            if n != 8:
                return Status.ERR_LENGTH, b""
            off, mx, _ = struct.unpack("<IHH", p)
            ack = (off - self.out_base) & 0xFFFF
            if ack > len(self.out_buf):
                return Status.ERR_ARG, b""
            del self.out_buf[:ack]
            self.out_base += ack
            self._advance()
            k = min(mx, len(self.out_buf), self.max_payload // 4 - 1)
            s = self._status()
            flags = FLAG_RUNNING * s.running | FLAG_CORE_BUSY * s.core_busy | \
                FLAG_CORE_DONE * s.core_done
            return Status.OK, struct.pack("<BBH", flags, 0, s.in_free) + _words(
                self.out_buf[:k])
        raise AssertionError(op)  # pragma: no cover
