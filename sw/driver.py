"""Host driver for the accelerator board: transports, the framed protocol, program runs.

:func:`connect` opens a board from a port string and returns an :class:`Accelerator`:

* ``/dev/ttyUSB1``, ``COM3``, ``serial:///dev/ttyUSB1?baud=3000000`` → :class:`SerialTransport`
  (pyserial);
* ``sim://BOARD`` → :class:`SimTransport`: starts ``python -m mixpe.sim.simboard serve --board
  BOARD`` (the Verilator-simulated board), which prints ``PORT <n>``, and connects to it over
  TCP; ``tcp://HOST:PORT`` attaches to one already running;
* ``model://PRESET`` → :class:`ModelTransport`: the Python board model
  (:class:`mixpe.sw.protocol.BoardModel`) of a ``CORE_PRESETS`` configuration, in process.

:class:`Accelerator` speaks the protocol of ``docs/protocol.md``: ``identify`` (refuses a board
built from another configuration), ``write_rows``/``read_rows`` (scratchpad bursts, split into
frames of the board's ``max_payload``, sent in a window so the link never idles, retried on
error responses and timeouts), ``write_program``, ``run_program`` (runs a compiled
:class:`~mixpe.sw.compiler.Program` and returns its ``o_stream`` words, as
:func:`mixpe.sw.core_ref.run_program` does), ``status``, ``link_counters``, ``abort``.

Weights stay resident: ``run_program`` hoists every LOAD of ``wsp``/``qsp`` whose rows the
program loads only once and reads only after that LOAD out of the instruction stream (it
becomes a NOP) and writes those rows with WRITE_MEM first; the driver keeps a mirror of the
board's ``wsp``/``qsp``/``imem`` contents and sends only rows and instructions that differ, so
a second inference with the same weights sends only the activations.

This module never imports Amaranth.
"""

from __future__ import annotations

import abc
import os
import select
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

from . import protocol as P
from .core_config import CORE_PRESETS, MEMORIES, CoreConfig
from .isa import Instr, Mem
from .isa import Opcode as Op

__all__ = [
    "Transport", "SerialTransport", "SocketTransport", "SimTransport", "ModelTransport",
    "connect", "Accelerator", "AcceleratorError", "ConfigMismatchError", "LinkError",
    "LinkStats", "fuzz_link",
]


class AcceleratorError(Exception):
    """The board refused a request (status in ``.status``) or behaved unexpectedly."""

    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.status = status


class ConfigMismatchError(AcceleratorError):
    """The board was built from another configuration (IDENTIFY hash differs)."""


class LinkError(AcceleratorError):
    """No valid response after all retries."""


# -- transports --------------------------------------------------------------------------------

class Transport(abc.ABC):
    """A byte pipe to a board."""

    #: Payload line rate in bytes per second, when known (UART: baud / 10).
    line_rate: float | None = None

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes (may return before they are on the wire)."""

    @abc.abstractmethod
    def read(self, n: int, timeout: float) -> bytes:
        """Return up to ``n`` bytes: as soon as ``n`` are there, or what came within
        ``timeout`` seconds (possibly none)."""

    def read_some(self, n: int, timeout: float) -> bytes:
        """Return between 1 and ``n`` bytes as soon as any are there, or ``b""`` after
        ``timeout`` seconds."""
        first = self.read(1, timeout)
        if not first:
            return b""
        more = min(n - 1, self.in_waiting)
        return first + (self.read(more, 0) if more > 0 else b"")

    @property
    def in_waiting(self) -> int:
        """Bytes that can be read without waiting (0 when unknown)."""
        return 0

    def clock(self) -> float:
        """Seconds on the transport's clock (simulated transports count simulated time)."""
        return time.monotonic()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A serial port (pyserial), 8N1 at ``baud``."""

    def __init__(self, port: str, baud: int = 115200):
        import serial  # pyserial, only needed for real boards
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        # serial_for_url: device paths and pyserial URLs (``loop://``, ``rfc2217://``)
        self._ser = serial.serial_for_url(port, baudrate=baud, timeout=0.1, write_timeout=10)
        self.line_rate = baud / 10

    def write(self, data: bytes) -> None:
        self._ser.write(data)

    def read(self, n: int, timeout: float) -> bytes:
        self._ser.timeout = max(0.0, timeout)
        return self._ser.read(n)

    def read_some(self, n: int, timeout: float) -> bytes:
        waiting = self._ser.in_waiting
        if waiting:
            return self._ser.read(min(n, waiting))
        return super().read_some(n, timeout)

    @property
    def in_waiting(self) -> int:
        return self._ser.in_waiting

    def close(self) -> None:
        self._ser.close()


class SocketTransport(Transport):
    """A TCP connection to a simulated board (``tcp://HOST:PORT``)."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 30.0):
        self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        view = memoryview(bytes(data))
        while view:
            _, w, _ = select.select([], [self._sock], [], 10)
            if not w:
                raise LinkError("socket write timed out")
            try:
                k = self._sock.send(view)
            except BlockingIOError:
                continue
            view = view[k:]
            self._pump(0)  # keep the board's output flowing while we write

    def _pump(self, timeout: float) -> bool:
        r, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not r:
            return False
        try:
            chunk = self._sock.recv(1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            raise LinkError("the simulated board closed the connection")
        self._buf += chunk
        return True

    def read(self, n: int, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while len(self._buf) < n:
            left = end - time.monotonic()
            if left <= 0 or not self._pump(left):
                if time.monotonic() >= end:
                    break
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_some(self, n: int, timeout: float) -> bytes:
        if not self._buf:
            self._pump(timeout)
        while self._pump(0):
            pass
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    @property
    def in_waiting(self) -> int:
        while self._pump(0):
            pass
        return len(self._buf)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:  # pragma: no cover
            pass


class SimTransport(SocketTransport):
    """Start the simulated board ``BOARD`` (``python -m mixpe.sim.simboard serve --board
    BOARD``) and connect to the TCP port it prints (``PORT <n>``)."""

    def __init__(self, board: str, *, start_timeout: float = 600.0, extra_args=()):
        try:
            import importlib.util
            if importlib.util.find_spec("mixpe.sim.simboard") is None:
                raise ModuleNotFoundError
        except ModuleNotFoundError:
            raise AcceleratorError("sim:// needs mixpe.sim.simboard (the Verilator simulated "
                                   "board), which is not installed") from None
        cmd = [sys.executable, "-m", "mixpe.sim.simboard", "serve", "--board", board,
               *extra_args]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                      env=dict(os.environ))
        port = None
        end = time.monotonic() + start_timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self._proc.stdout], [], [], 1.0)
            if r:
                line = self._proc.stdout.readline()
                if not line:
                    break
                if line.startswith("PORT "):
                    port = int(line.split()[1])
                    break
            if self._proc.poll() is not None:
                break
        if port is None:
            self._proc.kill()
            raise AcceleratorError(f"the simulated board {board!r} did not start "
                                   f"(no 'PORT <n>' line from {' '.join(cmd)})")
        self.line_rate = None
        super().__init__("127.0.0.1", port)

    def close(self) -> None:
        super().close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()


class ModelTransport(Transport):
    """The Python board model (:class:`mixpe.sw.protocol.BoardModel`), in process.

    ``corrupt`` (optional) is called with each written chunk and returns the bytes the board
    sees instead (fault injection in tests).
    """

    def __init__(self, config: CoreConfig, *, corrupt=None, **model_kw):
        self.model = P.BoardModel(config, **model_kw)
        self._out = bytearray()
        self._corrupt = corrupt

    def write(self, data: bytes) -> None:
        data = bytes(data)
        if self._corrupt is not None:
            data = self._corrupt(data)
        self._out += self.model.feed(data)

    def read(self, n: int, timeout: float) -> bytes:
        if len(self._out) < n and timeout > 0:
            self._out += self.model.timeout()  # the board's byte timeout would expire
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    @property
    def in_waiting(self) -> int:
        return len(self._out)


def _transport_for(port: str, baud: int | None) -> Transport:
    if not isinstance(port, str) or not port:
        raise ValueError(f"port must be a non-empty string, not {port!r}")
    u = urllib.parse.urlsplit(port)
    if u.scheme == "sim":
        board = (u.netloc + u.path).strip("/")
        if not board:
            raise ValueError(f"port {port!r}: sim:// needs a board name (sim://ulx3s)")
        return SimTransport(board)
    if u.scheme == "tcp":
        if not u.hostname or not u.port:
            raise ValueError(f"port {port!r}: expected tcp://HOST:PORT")
        return SocketTransport(u.hostname, u.port)
    if u.scheme == "model":
        name = (u.netloc + u.path).strip("/")
        if name not in CORE_PRESETS:
            raise ValueError(f"port {port!r}: model:// takes a preset, one of "
                             f"{', '.join(CORE_PRESETS)}")
        return ModelTransport(CORE_PRESETS[name])
    if u.scheme == "serial":
        q = urllib.parse.parse_qs(u.query)
        if "baud" in q:
            baud = int(q["baud"][0])
        return SerialTransport(u.path, baud or 115200)
    if u.scheme and len(u.scheme) > 1:
        raise ValueError(f"port {port!r}: unknown scheme {u.scheme!r} (allowed: sim, tcp, "
                         f"model, serial, or a device path)")
    return SerialTransport(port, baud or 115200)


def connect(port: str, *, config: CoreConfig | None = None, baud: int | None = None,
            **kw) -> "Accelerator":
    """Open the board at ``port`` and identify it.

    ``config`` (optional) is the configuration the caller compiled for: a board built from
    another one is refused with :class:`ConfigMismatchError`. Other keywords go to
    :class:`Accelerator`.

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> acc = connect("model://tiny-2x2", config=CORE_PRESETS["tiny-2x2"])
    >>> acc.info.max_payload
    1024
    """
    t = _transport_for(port, baud)
    if config is None and isinstance(t, ModelTransport):
        config = t.model.cfg
    try:
        return Accelerator(t, config=config, **kw)
    except Exception:
        t.close()
        raise


# -- the accelerator -----------------------------------------------------------------------------

@dataclass
class LinkStats:
    """Traffic counters of an :class:`Accelerator` (host side)."""

    frames: int = 0
    retries: int = 0
    timeouts: int = 0
    errors: dict = field(default_factory=dict)
    bytes_out: int = 0
    bytes_in: int = 0
    payload_out: int = 0
    payload_in: int = 0


_RETRYABLE = {P.Status.ERR_CRC, P.Status.ERR_OPCODE, P.Status.ERR_LENGTH, P.Status.ERR_TIMEOUT,
              P.Status.ERR_FULL}


class Accelerator:
    """Host API of a board (see the module docstring).

    Parameters
    ----------
    transport : Transport
    config : CoreConfig, optional
        Expected configuration; IDENTIFY must return its hash (else
        :class:`ConfigMismatchError`). Without it the driver cannot check, and methods that
        need row widths (``write_rows``, ``run_program``) need a program's config.
    timeout : float
        Seconds to wait for a response before resending (default 2).
    retries : int
        Resends of one frame before :class:`LinkError` (default 8).
    window : int
        Request frames in flight (default 4): enough to keep the link busy.
    """

    def __init__(self, transport: Transport, *, config: CoreConfig | None = None,
                 timeout: float = 2.0, retries: int = 8, window: int = 4):
        if not isinstance(transport, Transport) and not all(
                hasattr(transport, a) for a in ("write", "read")):
            raise TypeError(f"transport must be a Transport, not {transport!r}")
        for name, v, lo in (("retries", retries, 0), ("window", window, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, not {v!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if config is not None and not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self.t = transport
        self._clock = getattr(transport, "clock", time.monotonic)
        self.timeout = float(timeout)
        self.retries = retries
        self.window = window
        self.stats = LinkStats()
        self._seq = 0
        self._parser = P.ResponseParser()
        self._mirror: dict[tuple[int, int], tuple] = {}
        self._imem: dict[int, int] = {}
        self.config = config
        self.info = self.identify()
        if config is not None and self.info.config_hash != config.hash:
            raise ConfigMismatchError(
                f"the board was built from another configuration (board hash "
                f"{self.info.config_hash[:16]}…, expected {config.hash[:16]}…)")

    # -- frames ------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _read_some(self, timeout):
        rs = getattr(self.t, "read_some", None)
        if rs is not None:
            return rs(1 << 16, timeout)
        return self.t.read(1, timeout)

    def exchange(self, requests, *, window: int | None = None, check=None):
        """Send ``requests`` (``[(opcode, payload), ...]``) pipelined, return their responses.

        Up to ``window`` frames are in flight; a frame whose response is an error in
        :data:`_RETRYABLE`, whose response is missing while a later frame's arrived, or
        that times out, is sent again (with a new sequence number). ``check(i, response)``
        may return False to retry a response too (e.g. a STREAM_IN that met a gap).

        Raises :class:`AcceleratorError` for a non-retryable error response and
        :class:`LinkError` after ``retries`` resends of one frame.
        """
        window = self.window if window is None else window
        n = len(requests)
        results = [None] * n
        tries = [0] * n
        todo = list(range(n))  # indices to send, ascending
        inflight: dict[int, tuple[int, float]] = {}  # seq -> (index, sent_at)
        order: list[int] = []  # seqs in the order sent
        done = 0
        mp = getattr(self, "info", None)
        max_payload = mp.max_payload if mp else 0xFFFF

        line_rate = getattr(self.t, "line_rate", None)
        head_since = self._clock()

        def head_wait():
            # the head frame may still be on the wire behind its predecessors' bytes
            if order and line_rate:
                return self.timeout + inflight[order[0]][1] / line_rate
            return self.timeout

        def resend(i):
            tries[i] += 1
            self.stats.retries += 1
            if tries[i] > self.retries:
                raise LinkError(f"no valid response to {P.Opcode(requests[i][0]).name} after "
                                f"{self.retries} retries")
            j = 0
            while j < len(todo) and todo[j] < i:
                j += 1
            todo.insert(j, i)

        while done < n:
            while todo and len(inflight) < window:
                i = todo.pop(0)
                op, payload = requests[i]
                seq = self._next_seq()
                while seq in inflight:
                    seq = self._next_seq()
                frame = P.encode_request(op, seq, payload, max_payload=max_payload)
                self.t.write(frame)
                self.stats.frames += 1
                self.stats.bytes_out += len(frame)
                inflight[seq] = (i, len(frame))
                if not order:
                    head_since = self._clock()
                order.append(seq)
            data = self._read_some(head_wait())
            if not data:
                # nothing within the timeout: everything in flight is lost
                self.stats.timeouts += 1
                for seq in list(order):
                    i, _ = inflight.pop(seq)
                    resend(i)
                order.clear()
                continue
            self.stats.bytes_in += len(data)
            for r in self._parser.feed(data):
                if r.seq not in inflight:
                    continue  # a late answer to a frame already resent
                # responses come in request order: earlier frames without one were lost
                while order and order[0] != r.seq:
                    lost = order.pop(0)
                    i, _ = inflight.pop(lost)
                    resend(i)
                order.pop(0)
                head_since = self._clock()
                i, _ = inflight.pop(r.seq)
                if r.status == P.Status.OK and (check is None or check(i, r)):
                    results[i] = r
                    done += 1
                    self.stats.payload_in += len(r.payload)
                    self.stats.payload_out += len(requests[i][1])
                elif r.status == P.Status.OK or r.status in _RETRYABLE or (
                        requests[i][0] == P.Opcode.STREAM_IN and r.status == P.Status.ERR_ARG):
                    # (a STREAM_IN after a lost one meets a gap in the offsets: ERR_ARG)
                    self.stats.errors[r.status] = self.stats.errors.get(r.status, 0) + 1
                    resend(i)
                else:
                    raise AcceleratorError(
                        f"{P.Opcode(requests[i][0]).name}: the board answered "
                        f"{P.Status(r.status).name if r.status in list(P.Status) else r.status}",
                        r.status)
            if order and self._clock() - head_since > head_wait():
                self.stats.timeouts += 1
                for seq in list(order):
                    i, _ = inflight.pop(seq)
                    resend(i)
                order.clear()
        return results

    def request(self, op, payload: bytes = b"") -> P.Response:
        """Send one request and return its (OK) response."""
        return self.exchange([(op, payload)])[0]

    # -- board state ---------------------------------------------------------------------------
    def identify(self) -> P.IdentifyInfo:
        """Return the board's IDENTIFY information (configuration hash, buffer sizes)."""
        return P.unpack_identify(self.request(P.Opcode.IDENTIFY).payload)

    def status(self) -> P.StatusInfo:
        return P.unpack_status(self.request(P.Opcode.STATUS).payload)

    def link_counters(self) -> dict[str, int]:
        """The board's link counters (:data:`mixpe.sw.protocol.LINK_COUNTERS`)."""
        p = self.request(P.Opcode.COUNTERS).payload
        return dict(zip(P.LINK_COUNTERS, struct.unpack(f"<{len(P.LINK_COUNTERS)}I", p)))

    def abort(self) -> None:
        """Stop a running program (resets the core's registers, not its memories)."""
        self.request(P.Opcode.ABORT)
        self._imem.clear()  # conservative: contents survive, but state is unknown to us

    def _cfg(self) -> CoreConfig:
        if self.config is None:
            raise AcceleratorError("this operation needs the board's CoreConfig (connect with "
                                   "config=...)")
        return self.config

    # -- memories ------------------------------------------------------------------------------
    def write_rows(self, mem, addr: int, words, *, force: bool = False) -> int:
        """Write scratchpad rows ``addr …`` from their stream ``words`` (row after row,
        ``row_words`` each); rows the board already holds (per the driver's mirror) are
        skipped unless ``force``. Returns the number of rows sent.

        Raises ``ValueError`` for a bad memory, address range or word count.
        """
        cfg = self._cfg()
        mem = Mem(mem)
        if mem == Mem.CNT:
            raise ValueError("mem must be one of wsp, asp, acc, qsp")
        name = MEMORIES[mem]
        rw = cfg.row_words(name)
        words = [int(w) & 0xFFFFFFFF for w in words]
        if len(words) % rw:
            raise ValueError(f"words: {len(words)} is not a multiple of {name}'s {rw} words "
                             f"per row")
        rows = len(words) // rw
        depth = cfg.memory.depth(name)
        if addr < 0 or addr + rows > depth:
            raise ValueError(f"addr: rows {addr}..{addr + rows - 1} exceed {name}_depth={depth}")
        runs, cur = [], None
        for r in range(rows):
            row = tuple(words[r * rw:(r + 1) * rw])
            if not force and self._mirror.get((int(mem), addr + r)) == row:
                cur = None
                continue
            if cur is None:
                cur = [addr + r, []]
                runs.append(cur)
            cur[1].extend(row)
        per = max(1, (self.info.max_payload - 8) // (4 * rw))
        reqs = []
        for a, ws in runs:
            for k in range(0, len(ws) // rw, per):
                chunk = ws[k * rw:(k + per) * rw]
                reqs.append((P.Opcode.WRITE_MEM,
                             P.write_mem_payload(mem, a + k, len(chunk) // rw, chunk)))
        self.exchange(reqs)
        sent = 0
        for a, ws in runs:
            for r in range(len(ws) // rw):
                self._mirror[(int(mem), a + r)] = tuple(ws[r * rw:(r + 1) * rw])
                sent += 1
        return sent

    def read_rows(self, mem, addr: int, rows: int) -> list[int]:
        """Read scratchpad rows; returns their stream words (``row_words`` per row)."""
        cfg = self._cfg()
        mem = Mem(mem)
        if mem == Mem.CNT:
            raise ValueError("mem must be one of wsp, asp, acc, qsp")
        name = MEMORIES[mem]
        rw = cfg.row_words(name)
        depth = cfg.memory.depth(name)
        if rows < 1 or addr < 0 or addr + rows > depth:
            raise ValueError(f"rows: {addr}..{addr + rows - 1} must lie in {name}_depth={depth}")
        per = max(1, self.info.max_payload // (4 * rw))
        reqs = [(P.Opcode.READ_MEM, P.read_mem_payload(mem, a, min(per, addr + rows - a)))
                for a in range(addr, addr + rows, per)]
        # while the board sends a long response it does not read: keep few requests queued
        out = []
        for r in self.exchange(reqs, window=min(self.window, 2)):
            out += struct.unpack(f"<{len(r.payload) // 4}I", r.payload)
        return out

    def write_program(self, words, addr: int = 0) -> int:
        """Write 64-bit instruction words into imem from ``addr``; words the board already
        holds are skipped. Returns the number written."""
        words = [int(w) for w in words]
        depth = self._cfg().memory.imem_depth
        if addr < 0 or addr + len(words) > depth:
            raise ValueError(f"program of {len(words)} words at {addr} exceeds imem_depth="
                             f"{depth}")
        per = (self.info.max_payload - 4) // 8
        runs, cur = [], None
        for j, w in enumerate(words):
            if self._imem.get(addr + j) == w:
                cur = None
                continue
            if cur is None or len(cur[1]) >= per:
                cur = [addr + j, []]
                runs.append(cur)
            cur[1].append(w)
        self.exchange([(P.Opcode.WRITE_PROG, P.write_prog_payload(a, ws)) for a, ws in runs])
        for a, ws in runs:
            for j, w in enumerate(ws):
                self._imem[a + j] = w
        return sum(len(ws) for _, ws in runs)

    # -- programs ------------------------------------------------------------------------------
    def _hoist(self, program):
        """Split LOADs of wsp/qsp rows that can be preloaded: returns
        ``(instructions, i_stream, preload)`` with hoisted LOADs replaced by NOPs, their words
        removed from the stream, and ``preload = [(mem, addr, words), ...]``."""
        cfg = program.cfg
        loads: dict[tuple[int, int], int] = {}
        for ins in program.instructions:
            if ins.op == Op.LOAD and ins.mem in (Mem.WSP, Mem.QSP):
                for r in range(ins.addr, ins.addr + ins.rows):
                    loads[(ins.mem, r)] = loads.get((ins.mem, r), 0) + 1
        read: set[tuple[int, int]] = set()
        out_ins, out_stream, preload = [], [], []
        pos = 0
        C = cfg.array.cols
        for ins in program.instructions:
            if ins.op == Op.LOAD:
                n = ins.rows * cfg.row_words(MEMORIES[ins.mem])
                words = program.i_stream[pos:pos + n]
                pos += n
                rows = [(ins.mem, r) for r in range(ins.addr, ins.addr + ins.rows)]
                if ins.mem in (Mem.WSP, Mem.QSP) and all(
                        loads[k] == 1 and k not in read for k in rows):
                    preload.append((ins.mem, ins.addr, words))
                    out_ins.append(Instr(Op.NOP))
                    continue
                out_stream += words
            elif ins.op == Op.PRELOAD:
                read.update((Mem.WSP, r) for r in range(ins.wsp_addr, ins.wsp_addr + ins.k_rows))
                if ins.sel_en:
                    read.add((Mem.WSP, ins.sel_addr))
            elif ins.op == Op.REQUANT:
                read.update((Mem.QSP, r) for r in range(ins.qsp_addr, ins.qsp_addr + C))
            out_ins.append(ins)
        return out_ins, out_stream, preload, loads

    def run_program(self, program, *, resident: bool = True):
        """Run a compiled program; return ``(o_words, info)``.

        ``o_words`` are the core's ``o_stream`` words (``program.outputs(o_words)`` gives the
        layer output, ``program.counters(o_words)`` the core's counters when compiled with
        ``read_counters=True``). ``info`` has ``run_cycles`` (the link's count of cycles the
        core ran, summed over segments), ``segments``, ``preloaded_rows`` and the link
        traffic of this call. With ``resident`` (default) weight and requant rows are
        preloaded and kept (see the module docstring).
        """
        from .compiler import Program
        if not isinstance(program, Program):
            raise TypeError(f"program must be a compiler Program, not {program!r}")
        if self.config is not None and program.cfg != self.config:
            raise ConfigMismatchError("the program was compiled for another configuration")
        if self.config is None:
            self.config = program.cfg
        cfg = program.cfg
        s0 = (self.stats.bytes_out, self.stats.bytes_in)
        pre_rows = 0
        prog = program
        if resident:
            ins, stream, preload, loads = self._hoist(program)
            for mem, addr, words in preload:
                pre_rows += self.write_rows(mem, addr, words)
            # rows the program itself loads are no longer known to the mirror
            for (mem, r), _ in loads.items():
                if not any(m == mem and a <= r < a + len(w) // cfg.row_words(MEMORIES[m])
                           for m, a, w in preload):
                    self._mirror.pop((int(mem), r), None)
            prog = Program(cfg=cfg, instructions=ins, i_stream=stream, pieces=program.pieces,
                           out_shape=program.out_shape, requant=program.requant,
                           info=program.info)
        else:
            for ins in program.instructions:
                if ins.op == Op.LOAD:
                    for r in range(ins.addr, ins.addr + ins.rows):
                        self._mirror.pop((int(ins.mem), r), None)
        segs = prog.segments(cfg.memory.imem_depth)
        o_words: list[int] = []
        cycles = 0
        for seg in segs:
            o_words += self._run_segment(seg.words, seg.i_stream, seg.o_words)
            cycles += self.status().run_cycles
        info = dict(run_cycles=cycles, segments=len(segs), preloaded_rows=pre_rows,
                    bytes_out=self.stats.bytes_out - s0[0], bytes_in=self.stats.bytes_in - s0[1])
        return o_words, info

    def _run_segment(self, words, i_words, n_out) -> list[int]:
        self.write_program(words)
        self._run()
        i_words = [int(w) & 0xFFFFFFFF for w in i_words]
        in_off = 0
        out: list[int] = []
        credit = self.info.in_words
        per_in = (self.info.max_payload - 4) // 4
        per_out = self.info.max_payload // 4 - 1
        idle = 0
        while True:
            reqs = []
            while in_off < len(i_words) and credit > 0 and len(reqs) < self.window - 1:
                k = min(per_in, credit, len(i_words) - in_off)
                reqs.append((P.Opcode.STREAM_IN, P.stream_in_payload(
                    in_off, i_words[in_off:in_off + k])))
                in_off += k
                credit -= k
            reqs.append((P.Opcode.STREAM_OUT, P.stream_out_payload(len(out), per_out)))
            rs = self.exchange(reqs)
            last = rs[-1].payload
            flags, _, in_free = struct.unpack_from("<BBH", last)
            got = list(struct.unpack_from(f"<{(len(last) - 4) // 4}I", last, 4))
            out += got
            credit = in_free
            running = bool(flags & P.FLAG_RUNNING)
            if not running:
                if len(out) >= n_out and in_off >= len(i_words):
                    # acknowledge the last words; the ring keeps nothing we need
                    break
                if not got:
                    idle += 1
                    if idle > 3:
                        raise AcceleratorError(
                            f"the program stopped with {len(i_words) - in_off} input words "
                            f"unsent and {len(out)} of {n_out} output words")
            else:
                idle = 0
        if len(out) != n_out:
            raise AcceleratorError(f"the program sent {len(out)} words, expected {n_out}")
        return out

    def _run(self):
        """RUN, once: a RUN whose response was lost but that started is not repeated."""
        try:
            self.request(P.Opcode.RUN)
        except AcceleratorError as e:
            if e.status == P.Status.ERR_BUSY:
                st = self.status()
                if st.running and st.in_count == 0 and st.out_count == 0:
                    return  # an earlier copy of this RUN started the program
            raise

    def close(self) -> None:
        self.t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- link fuzzing --------------------------------------------------------------------------------

def fuzz_link(transport: Transport, cfg: CoreConfig, *, frames: int = 1000, seed: int = 0,
              timeout: float = 1.0, progress: bool = False) -> dict:
    """Send ``frames`` random good and bad frames to a board and check its robustness.

    Bad frames are WRITE_MEM frames aimed at a *canary* region (the upper half of ``wsp``)
    with flipped bits, truncations, wrong lengths (with a matching or a stale CRC), unknown
    opcodes, and garbage bytes between frames; good frames are IDENTIFY, STATUS, WRITE_MEM to
    the lower half of ``wsp`` (recorded) and READ_MEM of it (compared). After every bad frame
    a good STATUS probe must be answered (resent up to 7 times: a swallowed probe is answered
    after the board's byte timeout). Checks, raising ``AssertionError``: every response has a
    valid CRC, no bad frame is answered OK, every probe is answered, READ_MEM returns what was
    written, and at the end the canary region is unchanged (no rejected frame wrote) and the
    lower half holds exactly the good writes. Returns counts by kind and status.
    """
    import collections
    import random

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, not {frames!r}")
    rng = random.Random(seed)
    parser = P.ResponseParser()
    acc = Accelerator(transport, config=cfg, timeout=timeout, retries=8)
    depth = cfg.memory.wsp_depth
    rw = cfg.row_words("wsp")
    row_mask = (1 << cfg.row_bits("wsp")) - 1
    half = depth // 2
    mask_words = [(row_mask >> (32 * j)) & 0xFFFFFFFF for j in range(rw)]
    canary = acc.read_rows(Mem.WSP, half, depth - half)
    good = acc.read_rows(Mem.WSP, 0, half)
    counts: collections.Counter = collections.Counter()
    state = {"seq": acc._seq}

    def seq():
        state["seq"] = (state["seq"] + 1) & 0xFF
        return state["seq"]

    def rand_rows(lo, hi, max_rows):
        rows = rng.randint(1, max_rows)
        addr = rng.randint(lo, hi - rows)
        words = [rng.getrandbits(32) & mask_words[k % rw] for k in range(rows * rw)]
        return addr, rows, words

    def wait_for(s, n_try_frame):
        """Read responses until the one with seq ``s``; returns (it, others) or (None, ..)."""
        others = []
        end = acc._clock() + timeout
        while acc._clock() < end:
            data = acc._read_some(max(0.0, end - acc._clock()))
            if not data:
                break
            for r in parser.feed(data):
                if r.seq == s and r.opcode == n_try_frame:
                    return r, others
                others.append(r)
                if r.status != P.Status.OK:
                    # the bad frame is answered; the probe, unless swallowed by it, follows
                    # within a frame time
                    end = min(end, acc._clock() + timeout / 4)
        return None, others

    def good_exchange(op, payload):
        for _ in range(8):
            s = seq()
            transport.write(P.encode_request(op, s, payload))
            r, others = wait_for(s, op)
            for o in others:
                assert o.status != P.Status.OK or o.opcode in (P.Opcode.STATUS,
                                                               P.Opcode.IDENTIFY), o
            if r is not None and r.status == P.Status.OK:
                return r
            counts["probe_retries"] += 1
        raise AssertionError(f"the board did not answer a good {P.Opcode(op).name} frame")

    per = max(1, min(16, (acc.info.max_payload - 8) // (4 * rw)))
    bar = None
    if progress:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("fuzzing the link", total=frames)
    sent = 0
    try:
        while sent < frames:
            kind = rng.choice(["good_write", "good_read", "good_info", "flip", "flip",
                               "truncate", "length", "length_crc", "opcode", "garbage"])
            if kind.startswith("good"):
                if kind == "good_write":
                    addr, rows, words = rand_rows(0, half, per)
                    good_exchange(P.Opcode.WRITE_MEM, P.write_mem_payload(Mem.WSP, addr, rows,
                                                                          words))
                    good[addr * rw:(addr + rows) * rw] = words
                elif kind == "good_read":
                    rows = rng.randint(1, per)
                    addr = rng.randint(0, half - rows)
                    r = good_exchange(P.Opcode.READ_MEM, P.read_mem_payload(Mem.WSP, addr,
                                                                            rows))
                    got = list(struct.unpack(f"<{rows * rw}I", r.payload))
                    assert got == good[addr * rw:(addr + rows) * rw], "READ_MEM mismatch"
                else:
                    op = rng.choice([P.Opcode.IDENTIFY, P.Opcode.STATUS, P.Opcode.COUNTERS])
                    r = good_exchange(op, b"")
                    if op == P.Opcode.IDENTIFY:
                        assert P.unpack_identify(r.payload).config_hash == cfg.hash
                counts[kind] += 1
                sent += 1
            else:
                addr, rows, words = rand_rows(half, depth, per)
                s = seq()
                f = bytearray(P.encode_request(P.Opcode.WRITE_MEM, s, P.write_mem_payload(
                    Mem.WSP, addr, rows, words)))
                if kind == "flip":
                    orig = bytes(f)
                    while bytes(f) == orig:  # (two flips of one bit would cancel)
                        for _ in range(rng.randint(1, 3)):
                            i = rng.randrange(len(f))
                            f[i] ^= 1 << rng.randrange(8)
                elif kind == "truncate":
                    del f[rng.randrange(2, len(f) - 1):]
                elif kind in ("length", "length_crc"):
                    n = len(f) - P.REQ_OVERHEAD
                    new = n
                    while new == n:
                        new = rng.choice([rng.randrange(0, n + 8), rng.randrange(0, 0x10000)])
                    body = bytearray(f[2:-4])
                    body[2:4] = struct.pack("<H", new)
                    crc = P.crc32(bytes(body)) if kind == "length_crc" else struct.unpack(
                        "<I", bytes(f[-4:]))[0]
                    f = bytearray(P.SYNC + bytes(body) + struct.pack("<I", crc))
                elif kind == "opcode":
                    op = rng.choice([b for b in range(256) if b not in set(P.Opcode)])
                    f = bytearray(P.encode_request(op, s, bytes(f[6:-4])))
                else:  # garbage, possibly with sync bytes, then a good-looking frame cut short
                    g = bytes(rng.choice([0xA5, 0x5A, rng.getrandbits(8)])
                              for _ in range(rng.randint(1, 24)))
                    f = bytearray(g)
                transport.write(bytes(f))
                counts[kind] += 1
                sent += 1
                # the board must still answer a good frame (and nothing bad was accepted)
                good_exchange(P.Opcode.STATUS, b"")
            if bar is not None:
                bar.update(task, completed=sent)
    finally:
        if bar is not None:
            bar.stop()
    assert parser.bad_frames == 0, f"{parser.bad_frames} responses with a bad CRC"
    assert acc.read_rows(Mem.WSP, half, depth - half) == canary, \
        "a rejected frame changed the canary region"
    assert acc.read_rows(Mem.WSP, 0, half) == good, "the good writes were not all kept"
    counts["link_counters"] = acc.link_counters()
    return dict(counts)
