"""Bulk-transfer efficiency of the host link on the simulated board, in simulated time.

Run: ``.venv/bin/python -P bench/link.py [--board ulx3s] [--kib 64] [--json]`` (writes
``bench/results/link.md``; the first run builds the board model, a few minutes for ulx3s).

The host writes ``--kib`` KiB of activation rows into the ``asp`` scratchpad with WRITE_MEM
frames of the board's largest payload (IDENTIFY tells it), then reads them back with READ_MEM
and checks every word. Time is the simulated board's own cycle counter (``STATS`` of
``sim/simboard_main.cpp``), so Python's speed does not enter except as the cycles the board
simulates while the host prepares the next frame:

``payload rate`` = data bytes / (cycles / ``host.clk_hz``) in bytes per simulated second;
``line rate`` = ``clk_hz / (clocks_per_bit · 10)``: the UART's 8N1 payload bytes per second
(the simulated UART runs at ``host.sim_clocks_per_bit`` clocks per bit);
``efficiency`` = payload rate / line rate. Goal: ≥ 90 % for writes. Frame overhead alone bounds it
at ``D / (D + 18)`` for ``D`` data bytes per frame (10 bytes of sync, header and CRC plus the
8-byte WRITE_MEM arguments).

Modes: ``driver`` (``mixpe.sw.driver``'s bulk write/read when it is there: what the user gets),
``stop-and-wait`` (one frame, then its response, then the next frame: raw protocol frames
from ``mixpe.sw.protocol``) and ``pipelined`` (two frames in flight).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "link.md"


class RawLink:
    """Request/response frames over the simulated board's socket (``mixpe.sw.protocol``)."""

    def __init__(self, sock: socket.socket):
        from mixpe.sw import protocol as P

        self.P = P
        self.sock = sock
        self.sock.settimeout(120)
        self.parser = P.ResponseParser()
        self.seq = 0
        self.pending: list = []

    def send(self, opcode, payload=b"") -> int:
        self.seq = (self.seq + 1) & 0xFF
        self.sock.sendall(self.P.encode_request(opcode, self.seq, payload))
        return self.seq

    def receive(self):
        while not self.pending:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the simulated board closed the connection")
            self.pending += self.parser.feed(chunk)
        r = self.pending.pop(0)
        if not r.ok:
            raise RuntimeError(f"board answered {r.status!r} to opcode {r.opcode:#x}")
        return r

    def transact(self, opcode, payload=b""):
        seq = self.send(opcode, payload)
        r = self.receive()
        assert r.seq == seq, (r.seq, seq)
        return r


def _frames(cfg, max_payload, total_bytes, rng):
    """WRITE_MEM payloads into asp: (addr, rows, words) of at most max_payload bytes each."""
    row_words = cfg.row_words("asp")
    rows_per = (max_payload - 8) // (4 * row_words)
    depth = cfg.memory.asp_depth
    rows_per = min(rows_per, depth)
    frames, addr, done = [], 0, 0
    while done < total_bytes:
        rows = min(rows_per, -(-(total_bytes - done) // (4 * row_words)))
        if addr + rows > depth:
            addr = 0
        words = [int(w) for w in rng.integers(0, 2 ** 32, rows * row_words, dtype=np.uint64)]
        frames.append((addr, rows, words))
        addr += rows
        done += rows * row_words * 4
    return frames


def run_raw(sb, cfg, total_bytes, window, rng) -> dict:
    from mixpe.sw import protocol as P
    from mixpe.sw.isa import Mem

    link = RawLink(sb.connect())
    info = P.unpack_identify(link.transact(P.Opcode.IDENTIFY).payload)
    if info.config_hash != cfg.hash:
        raise RuntimeError("the simulated board's config hash differs from the preset")
    frames = _frames(cfg, info.max_payload, total_bytes, rng)
    mask = (1 << cfg.row_bits("asp")) - 1 if cfg.row_bits("asp") % 32 else None
    t0, s0 = time.perf_counter(), sb.stats()
    inflight = 0
    for addr, rows, words in frames:
        link.send(P.Opcode.WRITE_MEM, P.write_mem_payload(Mem.ASP, addr, rows, words))
        inflight += 1
        if inflight >= window:
            link.receive()
            inflight -= 1
    while inflight:
        link.receive()
        inflight -= 1
    s1, t1 = sb.stats(), time.perf_counter()
    # read back (the last frames written to each address win)
    image = {}
    for addr, rows, words in frames:
        rw = len(words) // rows
        for r in range(rows):
            image[addr + r] = words[r * rw:(r + 1) * rw]
    s2 = sb.stats()
    read_bytes = 0
    addrs = sorted(image)
    rows_per = (info.max_payload) // (4 * cfg.row_words("asp"))
    for i in range(0, len(addrs), rows_per):
        chunk = addrs[i:i + rows_per]
        if chunk[-1] - chunk[0] != len(chunk) - 1:
            continue
        r = link.transact(P.Opcode.READ_MEM, P.read_mem_payload(Mem.ASP, chunk[0], len(chunk)))
        got = np.frombuffer(r.payload, dtype="<u4").tolist()
        want = [w & (mask or 0xFFFFFFFF) for a in chunk for w in image[a]]
        if got != want:
            raise RuntimeError(f"READ_MEM of asp rows {chunk[0]}..{chunk[-1]} differs")
        read_bytes += len(got) * 4
    s3 = sb.stats()
    data = sum(len(w) * 4 for _, _, w in frames)
    return {"write_bytes": data, "write_cycles": s1["cycles"] - s0["cycles"],
            "read_bytes": read_bytes, "read_cycles": s3["cycles"] - s2["cycles"],
            "frames": len(frames), "data_bytes_per_frame": len(frames[0][2]) * 4,
            "max_payload": info.max_payload, "wall_s": round(t1 - t0, 2)}


def measure(board="ulx3s", kib=64, modes=("stop-and-wait", "pipelined"), log=print) -> dict:
    from mixpe.boards import sim_board_config
    from mixpe.sim.simboard import SimBoard, build_simboard

    cfg, _ = sim_board_config(board)
    build = build_simboard(board, log=log)
    cpb = build.manifest["simboard"]["clocks_per_bit"]
    out = {"board": board, "clocks_per_bit": cpb, "clk_hz": cfg.host.clk_hz,
           "line_rate_Bps": cfg.host.clk_hz / (cpb * 10), "modes": {}}
    rng = np.random.default_rng(1)
    for mode in modes:
        with SimBoard.start(board) as sb:
            window = 2 if mode == "pipelined" else 1
            r = run_raw(sb, cfg, kib * 1024, window, rng)
        for d in ("write", "read"):
            if r[f"{d}_cycles"]:
                rate = r[f"{d}_bytes"] / (r[f"{d}_cycles"] / cfg.host.clk_hz)
                r[f"{d}_Bps"] = rate
                r[f"{d}_efficiency"] = rate / out["line_rate_Bps"]
        d = r["data_bytes_per_frame"]
        r["frame_bound"] = d / (d + 18)
        out["modes"][mode] = r
        log(f"{mode}: write {r['write_efficiency']:.1%} of line rate, read "
            f"{r.get('read_efficiency', 0):.1%} ({r['frames']} frames, {r['wall_s']} s wall)")
    return out


def render(res: dict) -> str:
    lines = ["# Host link bulk transfer on the simulated board", "",
             "Written by `bench/link.py` (see its docstring). Board "
             f"`{res['board']}`: UART at {res['clocks_per_bit']} clocks per bit in simulation, "
             f"line rate {res['line_rate_Bps'] / 1e6:.3f} MB per simulated second at "
             f"{res['clk_hz'] / 1e6:g} MHz. Time is counted in simulated cycles.", "",
             "| mode | direction | data bytes | cycles | MB/s (simulated) | efficiency | "
             "frame bound | goal |", "|---|---|---|---|---|---|---|---|"]
    for mode, r in res["modes"].items():
        for d in ("write", "read"):
            if f"{d}_Bps" not in r:
                continue
            lines.append(f"| {mode} | {d} | {r[f'{d}_bytes']} | {r[f'{d}_cycles']} | "
                         f"{r[f'{d}_Bps'] / 1e6:.3f} | **{r[f'{d}_efficiency']:.1%}** | "
                         f"{r['frame_bound']:.1%} | {'≥ 90 %' if d == 'write' else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s", choices=["ulx3s", "icebreaker", "tiny"])
    ap.add_argument("--kib", type=int, default=64, help="KiB written (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if args.kib < 1:
        raise SystemExit("--kib must be at least 1")
    res = measure(args.board, args.kib, log=lambda s: print(s, file=sys.stderr, flush=True))
    text = render(res)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text + f"\n<!-- link.json\n{json.dumps(res)}\n-->\n")
    tmp.replace(RESULTS)
    print(json.dumps(res, indent=1) if args.json else text)
    best = max(r["write_efficiency"] for r in res["modes"].values())
    return 0 if best >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
