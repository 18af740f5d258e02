"""The host link's frame engine: framed requests from the UART drive the accelerator core.

:class:`HostLink` implements the protocol of ``docs/protocol.md`` (constants and payload
layouts in :mod:`mixpe.sw.protocol`; :class:`mixpe.sw.protocol.BoardModel` is its Python
model). Byte streams come from/go to the UART (``hw/uart.py``); the core
(``hw/core.py:AcceleratorCore``) is driven through its ports.

Receive path
------------
``Hunt`` → ``Sync-1`` (``A5 5A``) → ``Header`` (opcode, seq, len) → ``Body`` (the payload is
assembled into 32-bit words, little-endian, and written into the frame buffer, a
``lib.memory.Memory`` of ``max_payload / 4`` words; the first two words are also kept in
registers) → ``CRC`` (four bytes through a CRC-32 :class:`amaranth.lib.crc.Processor`,
checked by its residue) → ``Decode``. A ``len`` above ``max_payload`` is answered
``ERR_LENGTH`` right after the header; a byte gap of ``timeout_cycles`` inside a frame is
answered ``ERR_TIMEOUT``; after any response the engine hunts for the next sync marker.
Nothing acts before ``Decode`` has checked CRC, opcode, length and arguments (in that order),
so a rejected frame changes no memory.

Core access
-----------
Scratchpads are reachable only through LOAD/STORE, so WRITE_MEM and READ_MEM run a
two-instruction micro-program (``LOAD``/``STORE mem addr rows``; ``END``) written into
``imem[0..1]``; the engine keeps a shadow copy of the host's ``imem[0..1]`` (updated by
WRITE_PROG) and restores both words after the micro-program, so the host's program stays
intact. WRITE_MEM feeds the frame buffer's words to ``i_stream``; READ_MEM sends the core's
``o_stream`` words straight into the response. RUN starts the host's program with
``i_stream`` fed from an input FIFO (filled by STREAM_IN) and ``o_stream`` written into an
output ring buffer (read and acknowledged by STREAM_OUT with offsets, so a retried
STREAM_IN/STREAM_OUT is idempotent). ABORT pulses ``core_rst`` (registers only; memories
keep their contents).

Throughput: a frame is executed from the buffer at one word per cycle while the UART's RX
FIFO takes the next frame's bytes, so the link runs at line rate for frames of a few hundred
bytes (payload efficiency ``P / (P + 14)`` for WRITE_MEM bursts of ``P`` data bytes).
"""

from amaranth.hdl import Array, C, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import crc, fifo, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..sw import isa
from ..sw import protocol as P
from ..sw.core_config import MEMORIES, CoreConfig

__all__ = ["HostLink", "LinkSimulation"]


def _aw(depth: int) -> int:
    return max(1, ceil_log2(depth))


def _pow2(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi or v & (v - 1):
        raise ValueError(f"{name} must be a power of 2 in [{lo}, {hi}], not {v!r}")
    return v


class HostLink(wiring.Component):
    """Frame engine between a byte link and an :class:`~mixpe.hw.core.AcceleratorCore`.

    Parameters
    ----------
    config : CoreConfig
        The core's configuration (memory depths, row widths, the IDENTIFY hash).
    max_payload : int (keyword-only)
        Largest payload in bytes (the frame buffer), a power of 2 in ``[64, 16384]``.
    in_words, out_words : int (keyword-only)
        Depth (32-bit words) of the RUN input FIFO and output ring buffer, powers of 2 in
        ``[16, 32768]``.
    timeout_cycles : int (keyword-only)
        Clock cycles without a byte inside a frame before ``ERR_TIMEOUT``, in
        ``[16, 2**32 - 1]`` (the SoC uses 256 byte times).
    counter_bits : int (keyword-only)
        Width of the link counters (COUNTERS, zero-extended to u32, wrapping), in
        ``[8, 32]``; default 32 (16 saves ~100 LUTs on small FPGAs).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the host.
    tx : Out(stream.Signature(8))
        Bytes to the host.
    rx_error : In(1)
        UART receive error pulses (framing, overrun), counted in ``rx_errors``.
    core_i : Out(stream.Signature(32))
        To the core's ``i_stream``.
    core_o : In(stream.Signature(32))
        From the core's ``o_stream``.
    core_start, core_rst : Out(1)
        ``start`` pulse; reset of the core's registers (ABORT).
    core_busy, core_done : In(1)
    imem_addr, imem_data, imem_we : Out
        To the core's instruction memory write port.
    running : Out(1)
        A RUN program executes.
    error : Out(1)
        Pulses with every error response.
    """

    def __init__(self, config: CoreConfig, *, max_payload: int = P.MAX_PAYLOAD,
                 in_words: int = 512, out_words: int = 512, timeout_cycles: int = 10240,
                 counter_bits: int = 32):
        try:
            if not isinstance(config, CoreConfig):
                raise TypeError(f"config must be a CoreConfig, not {config!r}")
            self._max_payload = _pow2("max_payload", max_payload, 64, 16384)
            self._in_words = _pow2("in_words", in_words, 16, 32768)
            self._out_words = _pow2("out_words", out_words, 16, 32768)
            if isinstance(timeout_cycles, bool) or not isinstance(timeout_cycles, int) or not (
                    16 <= timeout_cycles < 2 ** 32):
                raise ValueError(f"timeout_cycles must be an integer in [16, 2**32 - 1], not "
                                 f"{timeout_cycles!r}")
            if isinstance(counter_bits, bool) or not isinstance(counter_bits, int) or not (
                    8 <= counter_bits <= 32):
                raise ValueError(f"counter_bits must be an integer in [8, 32], not "
                                 f"{counter_bits!r}")
        except Exception:
            self._MustUse__silence = True  # no UnusedElaboratable warning for bad parameters
            raise
        self._counter_bits = counter_bits
        self._config = config
        self._timeout = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "rx_error": In(1),
            "core_i": Out(stream.Signature(isa.STREAM_WORD_BITS)),
            "core_o": In(stream.Signature(isa.STREAM_WORD_BITS)),
            "core_start": Out(1),
            "core_rst": Out(1),
            "core_busy": In(1),
            "core_done": In(1),
            "imem_addr": Out(_aw(config.memory.imem_depth)),
            "imem_data": Out(isa.WORD_BITS),
            "imem_we": Out(1),
            "running": Out(1),
            "error": Out(1),
        })

    @property
    def config(self) -> CoreConfig:
        return self._config

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def in_words(self) -> int:
        return self._in_words

    @property
    def out_words(self) -> int:
        return self._out_words

    @property
    def timeout_cycles(self) -> int:
        return self._timeout

    def identify_payload(self) -> bytes:
        """The IDENTIFY response payload this link sends."""
        return P.pack_identify(P.IdentifyInfo(self._config.hash, P.VERSION, self._max_payload,
                                              self._in_words, self._out_words))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        MP = self._max_payload
        FB_DEPTH = MP // 4
        imem_depth = cfg.memory.imem_depth

        # -- buffers -------------------------------------------------------------------------
        m.submodules.fbuf = fbuf = memory.Memory(shape=32, depth=FB_DEPTH, init=[])
        fb_w = fbuf.write_port()
        fb_r = fbuf.read_port()
        fifo_clear = Signal()
        m.submodules.ififo = ififo = ResetInserter(fifo_clear)(
            fifo.SyncFIFOBuffered(width=32, depth=self._in_words))
        m.submodules.obuf = obuf = memory.Memory(shape=32, depth=self._out_words, init=[])
        ob_w = obuf.write_port()
        ob_r = obuf.read_port()
        ob_ab = ceil_log2(self._out_words)

        m.submodules.rx_crc = rx_crc = crc.Processor(catalog.CRC32_ISO_HDLC(data_width=8))
        m.submodules.tx_crc = tx_crc = crc.Processor(catalog.CRC32_ISO_HDLC(data_width=8))

        # -- frame state ---------------------------------------------------------------------
        opcode = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        len_m1 = Signal(16)
        bcount = Signal(16)
        word = Signal(32)
        p0 = Signal(32)
        p1 = Signal(32)
        idx = Signal(3)
        timer = Signal(range(self._timeout + 1))
        status = Signal(8)

        # Response: resp_len payload bytes, sent word by word: the first pre_n words from the
        # frame buffer (written by "Fill" from the pre_kind snapshot), the rest from the core
        # (READ_MEM) or from the output ring (STREAM_OUT).
        PRE_MAX = 10
        pre_kind = Signal(3)
        pre_n = Signal(range(PRE_MAX + 1))
        fill_i = Signal(range(PRE_MAX + 1))
        widx = Signal(range(PRE_MAX + 1))
        pend_fb = Signal()
        resp_len = Signal(16)
        src_core = Signal()   # word source: core_o (else the output ring)
        after_micro = Signal()  # restore imem[0..1] after the response
        txw = Signal(32)
        have_w = Signal()
        pend_w = Signal()
        lane = Signal(2)

        # -- run state -----------------------------------------------------------------------
        running = Signal()
        # stream counts are kept modulo 2**16 (offsets are compared modulo 2**16)
        in_count = Signal(16)
        out_wr = Signal(16)
        out_base = Signal(16)
        rd_ptr = Signal(16)
        run_cycles = Signal(32)
        shadow0 = Signal(64)
        shadow1 = Signal(64)
        cnt = {k: Signal(self._counter_bits, name=f"cnt_{k}") for k in P.LINK_COUNTERS
               if k != "run_cycles"}
        m.d.comb += self.running.eq(running)

        out_level = Signal(16)
        m.d.comb += out_level.eq(out_wr - out_base)
        in_free = Signal(range(self._in_words + 1))
        m.d.comb += in_free.eq(self._in_words - ififo.level)
        in_free16 = Signal(16)
        m.d.comb += in_free16.eq(in_free)

        with m.If(running):
            m.d.sync += run_cycles.eq(run_cycles + 1)
            with m.If(self.core_done):
                m.d.sync += running.eq(0)
        with m.If(self.rx_error):
            m.d.sync += cnt["rx_errors"].eq(cnt["rx_errors"] + 1)

        # Output ring (RUN): core_o → obuf.
        ob_accept = Signal()
        ob_room = Signal()
        m.d.comb += [
            ob_w.addr.eq(out_wr[:ob_ab]),
            ob_w.data.eq(self.core_o.payload),
            ob_accept.eq(running & self.core_o.valid & ob_room),
            ob_w.en.eq(ob_accept),
        ]
        # registered: room for one more word even if one is written this cycle
        m.d.sync += ob_room.eq(out_level < self._out_words - 1)
        with m.If(running):
            m.d.comb += self.core_o.ready.eq(ob_room)
        with m.If(ob_accept):
            m.d.sync += out_wr.eq(out_wr + 1)

        # Input FIFO (RUN) → core_i; the frame-buffer feeder (micro-programs, STREAM_IN).
        feed_valid = Signal()
        feed_ptr = Signal(range(FB_DEPTH + 1))
        feed_end = Signal(range(FB_DEPTH + 1))
        feed_en = Signal()   # the feeder runs
        feed_to_fifo = Signal()
        feed_ready = Signal()
        m.d.comb += feed_ready.eq(Mux(feed_to_fifo, ififo.w_stream.ready, self.core_i.ready))
        with m.If(running):
            m.d.comb += [
                self.core_i.payload.eq(ififo.r_stream.payload),
                self.core_i.valid.eq(ififo.r_stream.valid),
                ififo.r_stream.ready.eq(self.core_i.ready),
            ]
        with m.Else():
            m.d.comb += [
                self.core_i.payload.eq(fb_r.data),
                self.core_i.valid.eq(feed_valid & ~feed_to_fifo),
            ]
        m.d.comb += [
            ififo.w_stream.payload.eq(fb_r.data),
            ififo.w_stream.valid.eq(feed_valid & feed_to_fifo),
        ]
        # The read port holds its data while `en` is low: it is the feeder's output register.
        fb_rd_addr = Signal(range(FB_DEPTH))
        fb_rd_en = Signal()
        m.d.comb += [fb_r.addr.eq(fb_rd_addr), fb_r.en.eq(fb_rd_en)]
        with m.If(feed_en & (~feed_valid | feed_ready)):
            m.d.comb += [fb_rd_addr.eq(feed_ptr), fb_rd_en.eq(feed_ptr < feed_end)]
            m.d.sync += feed_valid.eq(feed_ptr < feed_end)
            with m.If(feed_ptr < feed_end):
                m.d.sync += feed_ptr.eq(feed_ptr + 1)
        feed_idle = Signal()
        m.d.comb += feed_idle.eq(~feed_valid & (feed_ptr >= feed_end))

        # -- decode helpers ------------------------------------------------------------------
        mem_f = p0[0:8]
        addr_f = p0[16:32]
        rows_f = p1[0:16]
        depth = Signal(16)
        data_words = Signal(20)
        with m.Switch(mem_f):
            for i, name in enumerate(MEMORIES):
                with m.Case(i):  # (a constant multiplication: shifts and adds)
                    m.d.comb += [data_words.eq(rows_f * cfg.row_words(name)),
                                 depth.eq(cfg.memory.depth(name))]
        # Everything Decode needs is computed here in registered stages from p0/p1/length
        # (set by the last payload byte) and the stream state; "Settle" waits SETTLE cycles
        # after the CRC so that all stages hold before Decode reads them. Stream levels may be
        # a few cycles old: that errs on the safe side (less room, fewer words).
        SETTLE = 6
        dw_r = Signal(20)
        depth_r = Signal(16)
        mem_ok = Signal()
        range_ok = Signal()
        wm_len_bad = Signal()
        rd_big = Signal()
        rd_len = Signal(16)
        prog_k = Signal(16)
        prog_bad = Signal()
        sin_k = Signal(16)
        sin_new = Signal()
        sin_full = Signal()
        sin_dup = Signal()
        ack = Signal(16)
        ack_bad = Signal()
        avail = Signal(16)
        kk = Signal(16)
        sout_len = Signal(16)
        m.d.sync += [
            dw_r.eq(data_words), depth_r.eq(depth),
            mem_ok.eq(mem_f < len(MEMORIES)),
            range_ok.eq((rows_f != 0) & (addr_f + rows_f <= depth_r)),
            wm_len_bad.eq(length != 8 + 4 * dw_r),
            rd_big.eq(4 * dw_r > MP),
            rd_len.eq(4 * dw_r),
            prog_k.eq((length - 4)[3:]),
            prog_bad.eq(p0[:16] + prog_k > imem_depth),
            sin_k.eq((length - 4)[2:]),
            sin_new.eq(p0[:16] == in_count),
            sin_full.eq(sin_k > in_free),
            sin_dup.eq((in_count - p0[:16])[:16] >= sin_k),
            ack.eq(p0[:16] - out_base),
            ack_bad.eq(ack > out_level),
            avail.eq(out_level - ack),
            kk.eq(Mux(p1[:16] < avail, p1[:16], avail)),
            sout_len.eq(4 + 4 * Mux(kk < MP // 4 - 1, kk, MP // 4 - 1)),
        ]
        settle = Signal(range(SETTLE + 1))

        def instr(op, mem, addr, rows):
            offs = isa.field_offsets(op)
            w = Const(int(op) << isa.OPCODE_LSB, 64)
            for val, name in ((mem, "mem"), (addr, "addr"), (rows, "rows")):
                lsb, width = offs[name]
                w = w | (val[:width].as_unsigned() << lsb)
            return w

        micro_op = Signal()  # 0: LOAD, 1: STORE
        micro_w0 = Signal(64)
        m.d.comb += micro_w0.eq(Mux(micro_op,
                                    instr(isa.Opcode.STORE, mem_f, addr_f, rows_f),
                                    instr(isa.Opcode.LOAD, mem_f, addr_f, rows_f)))
        END_WORD = isa.encode(isa.Instr(isa.Opcode.END))

        flags = Cat(running, self.core_busy, self.core_done)
        ident = self.identify_payload()
        u32 = lambda v: Cat(v, C(0, 32 - len(v))) if len(v) < 32 else v[:32]  # noqa: E731
        PRE = {  # kind: words (little-endian u32 fields of docs/protocol.md)
            1: [C(int.from_bytes(ident[4 * j:4 * j + 4], "little"), 32) for j in range(10)],
            2: [Cat(flags, C(0, 13), in_free16), u32(out_level), u32(in_count), u32(out_wr),
                run_cycles],
            3: [run_cycles if k == "run_cycles" else u32(cnt[k]) for k in P.LINK_COUNTERS],
            4: [Cat(in_free16, out_level)],
            5: [Cat(flags, C(0, 13), in_free16)],
        }
        KIND = {"ident": 1, "status": 2, "counters": 3, "sin": 4, "sout": 5}
        fill_word = Signal(32)
        with m.Switch(pre_kind):
            for k, ws in PRE.items():
                with m.Case(k):
                    m.d.comb += fill_word.eq(Array(ws)[fill_i] if len(ws) > 1 else ws[0])

        def respond(st, n=0, kind=None):
            return [status.eq(st), resp_len.eq(n), fill_i.eq(0),
                    pre_kind.eq(KIND[kind] if kind else 0),
                    pre_n.eq(len(PRE[KIND[kind]]) if kind else 0)]

        # imem write port: micro-programs, restores, WRITE_PROG
        m.d.comb += self.core_rst.eq(0)

        take = Signal()
        m.d.comb += take.eq(self.rx.valid & self.rx.ready)
        byte = self.rx.payload

        # tx
        tx_take = Signal()
        m.d.comb += tx_take.eq(self.tx.valid & self.tx.ready)
        m.d.comb += [tx_crc.data.eq(self.tx.payload)]
        tx_cnt = Signal(16)
        tx_last = Signal(16)
        m.d.sync += tx_last.eq(resp_len - 1)  # resp_len is set >= 8 cycles before it is used

        wp_j = Signal(16)
        wp_lo = Signal(32)

        with m.FSM(name="link"):
            with m.State("Hunt"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(take & (byte == 0xA5)):
                    m.next = "Sync-1"
            with m.State("Sync-1"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(take):
                    with m.If(byte == 0x5A):
                        m.d.comb += rx_crc.start.eq(1)
                        m.d.sync += [idx.eq(0), timer.eq(0), opcode.eq(0), seq.eq(0),
                                     p0.eq(0), p1.eq(0)]
                        m.next = "Header"
                    with m.Elif(byte != 0xA5):
                        m.next = "Hunt"

            def timeout_check():
                with m.If(take):
                    m.d.sync += timer.eq(0)
                with m.Elif(timer == self._timeout - 1):
                    m.d.sync += respond(P.Status.ERR_TIMEOUT)
                    m.d.sync += cnt["err_timeout"].eq(cnt["err_timeout"] + 1)
                    m.next = "Fill"
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)

            with m.State("Header"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.valid.eq(take), rx_crc.data.eq(byte)]
                timeout_check()
                with m.If(take):
                    m.d.sync += idx.eq(idx + 1)
                    with m.Switch(idx):
                        with m.Case(0):
                            m.d.sync += opcode.eq(byte)
                        with m.Case(1):
                            m.d.sync += seq.eq(byte)
                        with m.Case(2):
                            m.d.sync += length[:8].eq(byte)
                        with m.Case(3):
                            n = Cat(length[:8], byte)
                            m.d.sync += [length[8:].eq(byte), bcount.eq(0), idx.eq(0),
                                         len_m1.eq(n - 1)]
                            with m.If(n > MP):
                                m.d.sync += respond(P.Status.ERR_LENGTH)
                                m.d.sync += cnt["err_length"].eq(cnt["err_length"] + 1)
                                m.next = "Fill"
                            with m.Elif(n == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "Body"
            with m.State("Body"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.valid.eq(take), rx_crc.data.eq(byte)]
                timeout_check()
                nxt = Signal(32)
                ln = bcount[:2]
                m.d.comb += nxt.eq(Mux(ln == 0, 0, word) | (byte.as_unsigned() << (ln * 8)))
                last = bcount == len_m1
                with m.If(take):
                    m.d.sync += [word.eq(nxt), bcount.eq(bcount + 1)]
                    with m.If((ln == 3) | last):
                        m.d.comb += [fb_w.addr.eq(bcount[2:]), fb_w.data.eq(nxt),
                                     fb_w.en.eq(1)]
                        with m.If(bcount[2:] == 0):
                            m.d.sync += p0.eq(nxt)
                        with m.If(bcount[2:] == 1):
                            m.d.sync += p1.eq(nxt)
                    with m.If(last):
                        m.d.sync += idx.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.valid.eq(take), rx_crc.data.eq(byte)]
                timeout_check()
                with m.If(take):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 3):
                        m.next = "Check"
            with m.State("Check"):
                with m.If(~rx_crc.match_detected):
                    m.d.sync += respond(P.Status.ERR_CRC)
                    m.d.sync += cnt["err_crc"].eq(cnt["err_crc"] + 1)
                    m.next = "Fill"
                with m.Else():
                    m.d.sync += settle.eq(0)
                    m.next = "Settle"

            with m.State("Settle"):  # the registered decode helpers catch up
                m.d.sync += settle.eq(settle + 1)
                with m.If(settle == SETTLE - 1):
                    m.next = "Decode"
            with m.State("Decode"):
                ok = cnt["frames_ok"].eq(cnt["frames_ok"] + 1)
                e_len = [cnt["err_length"].eq(cnt["err_length"] + 1)]
                e_oth = [cnt["err_other"].eq(cnt["err_other"] + 1)]
                m.next = "Fill"
                m.d.sync += [after_micro.eq(0), src_core.eq(0)]
                with m.Switch(opcode):
                    with m.Case(P.Opcode.IDENTIFY, P.Opcode.STATUS, P.Opcode.COUNTERS,
                                P.Opcode.RUN, P.Opcode.ABORT):
                        with m.If(length != 0):
                            m.d.sync += respond(P.Status.ERR_LENGTH) + e_len
                        with m.Else():
                            with m.Switch(opcode):
                                with m.Case(P.Opcode.IDENTIFY):
                                    m.d.sync += respond(P.Status.OK, 40, "ident")
                                    m.d.sync += ok
                                with m.Case(P.Opcode.STATUS):
                                    m.d.sync += respond(P.Status.OK, 20, "status")
                                    m.d.sync += ok
                                with m.Case(P.Opcode.COUNTERS):
                                    m.d.sync += respond(P.Status.OK, 32, "counters")
                                    m.d.sync += ok
                                with m.Case(P.Opcode.RUN):
                                    with m.If(running):
                                        m.d.sync += respond(P.Status.ERR_BUSY) + e_oth
                                    with m.Else():
                                        m.d.comb += [fifo_clear.eq(1), self.core_start.eq(1)]
                                        m.d.sync += [running.eq(1), in_count.eq(0),
                                                     out_wr.eq(0), out_base.eq(0),
                                                     run_cycles.eq(0)]
                                        m.d.sync += respond(P.Status.OK) + [ok]
                                with m.Case(P.Opcode.ABORT):
                                    m.d.comb += [fifo_clear.eq(1), self.core_rst.eq(1)]
                                    m.d.sync += [running.eq(0), in_count.eq(0), out_wr.eq(0),
                                                 out_base.eq(0)]
                                    m.d.sync += respond(P.Status.OK) + [ok]
                    with m.Case(P.Opcode.WRITE_MEM, P.Opcode.READ_MEM):
                        is_rd = opcode == P.Opcode.READ_MEM
                        with m.If((length < 8) | (is_rd & (length != 8))):
                            m.d.sync += respond(P.Status.ERR_LENGTH) + e_len
                        with m.Elif(~mem_ok):
                            m.d.sync += respond(P.Status.ERR_ARG) + e_oth
                        with m.Elif(~is_rd & wm_len_bad):
                            m.d.sync += respond(P.Status.ERR_LENGTH) + e_len
                        with m.Elif(is_rd & rd_big):
                            m.d.sync += respond(P.Status.ERR_ARG) + e_oth
                        with m.Elif(running):
                            m.d.sync += respond(P.Status.ERR_BUSY) + e_oth
                        with m.Elif(~range_ok):
                            m.d.sync += respond(P.Status.ERR_ARG) + e_oth
                        with m.Else():
                            m.d.sync += [micro_op.eq(is_rd), idx.eq(0), ok]
                            m.next = "Micro-Imem"
                    with m.Case(P.Opcode.WRITE_PROG):
                        with m.If((length < 12) | ((length - 4)[:3] != 0)):
                            m.d.sync += respond(P.Status.ERR_LENGTH) + e_len
                        with m.Elif(running):
                            m.d.sync += respond(P.Status.ERR_BUSY) + e_oth
                        with m.Elif(prog_bad):
                            m.d.sync += respond(P.Status.ERR_ARG) + e_oth
                        with m.Else():
                            m.d.sync += [wp_j.eq(0), ok]
                            m.next = "Prog-Lo"
                    with m.Case(P.Opcode.STREAM_IN):
                        with m.If((length < 8) | (length[:2] != 0)):
                            m.d.sync += respond(P.Status.ERR_LENGTH) + e_len
                        with m.Elif(sin_new):
                            with m.If(sin_full):
                                m.d.sync += respond(P.Status.ERR_FULL) + e_oth
                            with m.Else():
                                m.d.sync += [feed_ptr.eq(1), feed_end.eq(length[2:]),
                                             feed_to_fifo.eq(1), in_count.eq(in_count + sin_k),
                                             ok]
                                m.next = "Stream-In"
                        with m.Elif(sin_dup):
                            m.d.sync += ok
                            m.d.sync += respond(P.Status.OK, 4, "sin")
                        with m.Else():
                            m.d.sync += respond(P.Status.ERR_ARG) + e_oth
                    with m.Case(P.Opcode.STREAM_OUT):
                        with m.If(length != 8):
                            m.d.sync += respond(P.Status.ERR_LENGTH) + e_len
                        with m.Elif(ack_bad):
                            m.d.sync += respond(P.Status.ERR_ARG) + e_oth
                        with m.Else():
                            m.d.sync += [out_base.eq(p0), rd_ptr.eq(p0), src_core.eq(0), ok]
                            m.d.sync += respond(P.Status.OK, sout_len, "sout")
                    with m.Default():
                        m.d.sync += respond(P.Status.ERR_OPCODE)
                        m.d.sync += cnt["err_opcode"].eq(cnt["err_opcode"] + 1)

            # WRITE_MEM / READ_MEM: imem[0] ← LOAD/STORE, imem[1] ← END, start.
            with m.State("Micro-Imem"):
                m.d.comb += [self.imem_we.eq(1), self.imem_addr.eq(idx),
                             self.imem_data.eq(Mux(idx == 0, micro_w0, END_WORD))]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == 1):
                    m.next = "Micro-Start"
            with m.State("Micro-Start"):
                m.d.comb += self.core_start.eq(1)
                with m.If(micro_op):
                    m.d.sync += [src_core.eq(1), after_micro.eq(1)]
                    m.d.sync += respond(P.Status.OK, rd_len)
                    m.next = "Fill"
                with m.Else():
                    m.d.sync += [feed_ptr.eq(2), feed_end.eq(length[2:]), feed_to_fifo.eq(0)]
                    m.next = "Micro-Feed"
            with m.State("Micro-Feed"):
                m.d.comb += feed_en.eq(1)
                with m.If(feed_idle & self.core_done):
                    m.d.sync += [after_micro.eq(1), feed_end.eq(0), feed_ptr.eq(0)]
                    m.d.sync += respond(P.Status.OK)
                    m.next = "Fill"
            with m.State("Micro-Wait"):  # READ_MEM: the response is sent; END follows
                with m.If(self.core_done):
                    m.d.sync += idx.eq(0)
                    m.next = "Restore"
            with m.State("Restore"):
                m.d.comb += [self.imem_we.eq(1), self.imem_addr.eq(idx),
                             self.imem_data.eq(Mux(idx == 0, shadow0, shadow1))]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == 1):
                    m.next = "Hunt"

            # WRITE_PROG: instruction j = frame words 1 + 2j (low), 2 + 2j (high).
            with m.State("Prog-Lo"):
                m.d.comb += [fb_rd_addr.eq(1 + 2 * wp_j), fb_rd_en.eq(1)]
                m.next = "Prog-Hi"
            with m.State("Prog-Hi"):
                m.d.sync += wp_lo.eq(fb_r.data)
                m.d.comb += [fb_rd_addr.eq(2 + 2 * wp_j), fb_rd_en.eq(1)]
                m.next = "Prog-Write"
            with m.State("Prog-Write"):
                a = p0[:16] + wp_j
                w = Cat(wp_lo, fb_r.data)
                m.d.comb += [self.imem_we.eq(1), self.imem_addr.eq(a), self.imem_data.eq(w)]
                with m.If(a == 0):
                    m.d.sync += shadow0.eq(w)
                with m.If(a == 1):
                    m.d.sync += shadow1.eq(w)
                m.d.sync += wp_j.eq(wp_j + 1)
                with m.If(wp_j + 1 == prog_k):
                    m.d.sync += respond(P.Status.OK)
                    m.next = "Fill"
                with m.Else():
                    m.next = "Prog-Lo"

            with m.State("Stream-In"):
                m.d.comb += feed_en.eq(1)
                with m.If(feed_idle):
                    m.d.sync += [feed_to_fifo.eq(0), feed_end.eq(0), feed_ptr.eq(0)]
                    m.next = "Stream-In-Resp"
            with m.State("Stream-In-Resp"):  # levels after the push
                m.d.sync += respond(P.Status.OK, 4, "sin")
                m.next = "Fill"

            # -- transmit a response ---------------------------------------------------------
            with m.State("Fill"):  # snapshot the prefix words into the frame buffer
                with m.If(fill_i < pre_n):
                    m.d.comb += [fb_w.addr.eq(fill_i), fb_w.data.eq(fill_word), fb_w.en.eq(1)]
                    m.d.sync += fill_i.eq(fill_i + 1)
                with m.Else():
                    m.next = "Tx-Sync-0"
            with m.State("Tx-Sync-0"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(0xA5)]
                with m.If(status != P.Status.OK):
                    m.d.comb += self.error.eq(tx_take)
                with m.If(tx_take):
                    m.next = "Tx-Sync-1"
            with m.State("Tx-Sync-1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(0x5A),
                             tx_crc.start.eq(1)]
                with m.If(tx_take):
                    m.d.sync += [tx_cnt.eq(0), have_w.eq(0), pend_w.eq(0), lane.eq(0),
                                 widx.eq(0)]
                    m.next = "Tx-Header"
            with m.State("Tx-Header"):
                hdr = Cat(opcode, status, seq, resp_len)
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(hdr.word_select(tx_cnt[:3], 8)),
                             tx_crc.valid.eq(tx_take)]
                with m.If(tx_take):
                    m.d.sync += tx_cnt.eq(tx_cnt + 1)
                    with m.If(tx_cnt == 4):
                        m.d.sync += tx_cnt.eq(0)
                        with m.If(resp_len == 0):
                            m.next = "Tx-CRC"
                        with m.Else():
                            m.next = "Tx-Payload"
            with m.State("Tx-Payload"):
                with m.If(have_w):
                    m.d.comb += [self.tx.valid.eq(1),
                                 self.tx.payload.eq(txw.word_select(lane, 8))]
                    with m.If(tx_take):
                        m.d.sync += lane.eq(lane + 1)
                        with m.If(lane == 3):
                            m.d.sync += have_w.eq(0)
                with m.Elif(pend_w):  # a synchronous read was issued last cycle
                    m.d.sync += [txw.eq(Mux(pend_fb, fb_r.data, ob_r.data)), have_w.eq(1),
                                 pend_w.eq(0)]
                    with m.If(~pend_fb):
                        m.d.sync += rd_ptr.eq(rd_ptr + 1)
                with m.Elif(widx < pre_n):
                    m.d.comb += [fb_rd_addr.eq(widx), fb_rd_en.eq(1)]
                    m.d.sync += [pend_w.eq(1), pend_fb.eq(1), widx.eq(widx + 1)]
                with m.Elif(src_core):
                    m.d.comb += self.core_o.ready.eq(~running)
                    with m.If(self.core_o.valid & ~running):
                        m.d.sync += [txw.eq(self.core_o.payload), have_w.eq(1)]
                with m.Else():
                    m.d.comb += [ob_r.addr.eq(rd_ptr[:ob_ab]), ob_r.en.eq(1)]
                    m.d.sync += [pend_w.eq(1), pend_fb.eq(0)]
                m.d.comb += tx_crc.valid.eq(tx_take)
                with m.If(tx_take):
                    m.d.sync += tx_cnt.eq(tx_cnt + 1)
                    with m.If(tx_cnt == tx_last):
                        m.d.sync += tx_cnt.eq(0)
                        m.next = "Tx-CRC"
            with m.State("Tx-CRC"):
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(tx_crc.crc.word_select(tx_cnt[:2], 8))]
                with m.If(tx_take):
                    m.d.sync += tx_cnt.eq(tx_cnt + 1)
                    with m.If(tx_cnt == 3):
                        with m.If(after_micro & src_core):
                            m.next = "Micro-Wait"
                        with m.Elif(after_micro):
                            m.d.sync += idx.eq(0)
                            m.next = "Restore"
                        with m.Else():
                            m.next = "Hunt"
        return m


class _LinkCore(wiring.Component):
    """HostLink + AcceleratorCore with the byte streams as ports (no UART)."""

    def __init__(self, config: CoreConfig, *, core_kw=None, link_kw=None):
        from .core import AcceleratorCore
        self.core = AcceleratorCore(config, **dict(core_kw or {}))
        self.link = HostLink(config, **dict(link_kw or {}))
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        core_rst = Signal()
        m.submodules.core = ResetInserter(core_rst)(self.core)
        m.submodules.link = link = self.link
        core = self.core
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        wiring.connect(m, link.core_i, core.i_stream)
        wiring.connect(m, core.o_stream, link.core_o)
        m.d.comb += [
            core.start.eq(link.core_start), link.core_busy.eq(core.busy),
            link.core_done.eq(core.done), core_rst.eq(link.core_rst),
            core.imem_addr.eq(link.imem_addr), core.imem_data.eq(link.imem_data),
            core.imem_we.eq(link.imem_we),
        ]
        return m


class LinkSimulation:
    """An in-process simulated board on Amaranth's simulator.

    At byte level by default (HostLink + core, one byte per cycle); with ``uart_divisor``
    the whole :class:`~mixpe.hw.soc.AcceleratorSoC` behind a host-side UART pair, at the
    real line rate ``clk_hz / (10 · uart_divisor)`` bytes per second (``line_rate``).

    ``write(data)`` queues host bytes (one enters the link per cycle while it takes them);
    ``read(n, timeout)`` runs the simulation until ``n`` response bytes are there or
    ``timeout`` seconds of simulated time (at ``clk_hz``) have passed, and returns what it
    has (at most ``n`` bytes). It has the ``Transport`` interface of
    :mod:`mixpe.sw.driver` (duck-typed: gateware modules do not import the driver), so
    the driver runs on it unchanged. Bytes can be paced with
    ``gap`` idle cycles between them (a UART delivers one byte per ``10 × divisor`` cycles).
    """

    def __init__(self, config: CoreConfig, *, clk_hz: float = 1e6, gap: int = 0,
                 uart_divisor: int | None = None, core_kw=None, link_kw=None):
        from collections import deque

        from amaranth.sim import Simulator
        link_kw = dict(link_kw or {})
        if uart_divisor is None:
            link_kw.setdefault("timeout_cycles", 2000)
            self.dut = _LinkCore(config, core_kw=core_kw, link_kw=link_kw)
            self.line_rate = None
        else:
            from .soc import _UARTHost
            self.dut = _UARTHost(config, clocks_per_bit=uart_divisor, core_kw=core_kw,
                                 link_kw=link_kw)
            self.line_rate = clk_hz / (10 * uart_divisor)
        self.config = config
        self.clk_hz = clk_hz
        self.gap = gap
        self.cycles = 0
        self._in = deque()
        self._out = bytearray()
        self._sim = Simulator(self.dut)
        self._sim.add_clock(1 / clk_hz)
        self._sim.add_testbench(self._bench, background=True)
        self._t = 0

    async def _bench(self, ctx):
        dut = self.dut
        ctx.set(dut.tx.ready, 1)
        wait = 0
        while True:
            send = bool(self._in) and wait == 0
            ctx.set(dut.rx.valid, send)
            if send:
                ctx.set(dut.rx.payload, self._in[0])
            _, _, rdy, tv, tp = await ctx.tick().sample(dut.rx.ready, dut.tx.valid,
                                                         dut.tx.payload)
            self.cycles += 1
            if wait:
                wait -= 1
            if send and rdy:
                self._in.popleft()
                wait = self.gap
            if tv:
                self._out.append(tp)

    def write(self, data: bytes) -> None:
        self._in.extend(bytes(data))

    def run(self, cycles: int) -> None:
        """Advance the simulation by ``cycles`` clock cycles."""
        self._t += cycles
        self._sim.run_until(self._t / self.clk_hz)

    def read(self, n: int, timeout: float) -> bytes:
        limit = self.cycles + max(1, int(timeout * self.clk_hz))
        step = 64
        while len(self._out) < n and self.cycles < limit:
            self.run(min(step, limit - self.cycles))
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def read_some(self, n: int, timeout: float) -> bytes:
        limit = self.cycles + max(1, int(timeout * self.clk_hz))
        while not self._out and self.cycles < limit:
            self.run(min(64, limit - self.cycles))
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def clock(self) -> float:
        """Simulated seconds."""
        return self.cycles / self.clk_hz

    @property
    def in_waiting(self) -> int:
        return len(self._out)
