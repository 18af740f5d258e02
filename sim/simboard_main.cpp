// mixpe simulated board: a Verilated SoC top bridged to one TCP connection as a serial port.
//
// Built by sim/simboard.py (Verilator --cc --exe --build) around the module `simtop`, which
// has ports clk, rx, tx and optionally `busy` (the SoC's `led_running`; compile with
// -DMIXPE_HAS_BUSY): the SoC with a power-on reset generated inside, so no top-level input but
// clk and rx ever changes (a reset input feeds every register's next-state mux, and Verilator
// re-evaluates logic fed by top-level inputs on both clock edges: 25 % of the time).
//
// Protocol, all in C++ and at full model speed:
//   * listens on 127.0.0.1:PORT (0 = any free port), prints "PORT <n>" on stdout and flushes,
//     accepts ONE connection, and exits when the peer closes it (after printing the stats);
//   * bytes from the socket are serialized onto `rx` as 8N1 frames of CPB clocks per bit,
//     back to back (the full line rate); `tx` is deserialized (start-bit edge, middle-of-bit
//     sampling, as a UART receiver does) into bytes sent back on the socket;
//   * the socket is polled (non-blocking) every BATCH cycles;
//   * when nothing is in flight on either line, nothing was sent or received for --idle-cycles
//     (2^16 by default with a busy port: longer than any silent stretch of the link engine) and
//     `busy` is low, the process blocks in poll() until the host sends (no simulated time
//     passes while blocked); without a busy port it only sleeps 10 ms per batch after 2^22
//     silent cycles (a long silent computation is slowed, never stopped);
//   * with --stdin-commands, stdin takes commands, one per line: "stats" prints a
//     "STATS {json}" line on stdout (cycles, wall and blocked seconds, bytes each way, framing
//     errors); the same line, tagged EXIT, is printed when the connection closes.
// Usage: Vsimtop --cpb N [--port P] [--batch B] [--idle-cycles C] [--max-cycles M]
//                [--stdin-commands]
#include "Vsimtop.h"
#include "verilated.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
    uint64_t cycles = 0;
    uint64_t to_dut = 0;     // bytes serialized onto rx
    uint64_t from_dut = 0;   // bytes deserialized from tx
    uint64_t frame_errors = 0;
    double blocked_s = 0.0;  // wall time spent blocked in poll() (no simulation)
    Clock::time_point t0 = Clock::now();
};

void print_stats(const Stats& s, int cpb, const char* tag) {
    double wall = std::chrono::duration<double>(Clock::now() - s.t0).count();
    double run = wall - s.blocked_s;
    std::printf("%s {\"cycles\": %llu, \"wall_s\": %.6f, \"blocked_s\": %.6f, "
                "\"cycles_per_s\": %.1f, \"to_dut_bytes\": %llu, \"from_dut_bytes\": %llu, "
                "\"frame_errors\": %llu, \"clocks_per_bit\": %d}\n",
                tag, (unsigned long long)s.cycles, wall, s.blocked_s,
                run > 0 ? s.cycles / run : 0.0, (unsigned long long)s.to_dut,
                (unsigned long long)s.from_dut, (unsigned long long)s.frame_errors, cpb);
    std::fflush(stdout);
}

long arg_long(int argc, char** argv, const char* name, long dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (std::strcmp(argv[i], name) == 0) return std::strtol(argv[i + 1], nullptr, 0);
    return dflt;
}

bool has_flag(int argc, char** argv, const char* name) {
    for (int i = 1; i < argc; i++)
        if (std::strcmp(argv[i], name) == 0) return true;
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    const int cpb = (int)arg_long(argc, argv, "--cpb", 0);
    const int port = (int)arg_long(argc, argv, "--port", 0);
    const int batch = (int)arg_long(argc, argv, "--batch", 2048);
#ifdef MIXPE_HAS_BUSY
    // Longer than any silent stretch of the SoC with busy low (a frame executes at one word
    // per cycle from a buffer of at most 4096 words before its response starts).
    const long idle_cycles = arg_long(argc, argv, "--idle-cycles", 1L << 16);
#else
    const long idle_cycles = arg_long(argc, argv, "--idle-cycles", 1L << 22);
#endif
    const long long max_cycles = arg_long(argc, argv, "--max-cycles", 0);
    if (cpb < 4 || batch < 1) {
        std::fprintf(stderr, "simboard: --cpb must be >= 4 and --batch >= 1\n");
        return 2;
    }

    int lsock = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    if (bind(lsock, (sockaddr*)&addr, sizeof addr) != 0 || listen(lsock, 1) != 0) {
        std::fprintf(stderr, "simboard: cannot listen on port %d: %s\n", port,
                     std::strerror(errno));
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(lsock, (sockaddr*)&addr, &alen);

    // Build and reset the model before accepting, so the first byte meets a running design.
    VerilatedContext ctx;
    ctx.commandArgs(argc, argv);
    Vsimtop* top = new Vsimtop(&ctx);
    top->rx = 1;
    top->clk = 0;
    top->eval();
    Stats st;
    for (int i = 0; i < 64; i++) {  // the power-on reset inside simtop lasts 16 cycles
        top->clk = 1; top->eval(); top->clk = 0; top->eval();
        st.cycles++;
    }

    std::printf("PORT %d\n", (int)ntohs(addr.sin_port));
    std::fflush(stdout);
    int sock = accept(lsock, nullptr, nullptr);
    close(lsock);
    if (sock < 0) {
        std::fprintf(stderr, "simboard: accept failed: %s\n", std::strerror(errno));
        return 1;
    }
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
    bool stdin_open = has_flag(argc, argv, "--stdin-commands");
    if (stdin_open) fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    st.t0 = Clock::now();  // rate counts from the connection on
    uint64_t cycles_at_connect = st.cycles;
    (void)cycles_at_connect;

    // Host -> DUT serializer: a ring of pending bytes and the current frame.
    std::vector<uint8_t> inq(1 << 16);
    size_t in_head = 0, in_len = 0;
    uint32_t ser_frame = 0;  // bits still to send, LSB first
    int ser_bits = 0;        // 0: idle
    int ser_cnt = 0;         // clocks left in the current bit
    // DUT -> host deserializer.
    int des_state = 0;       // 0 idle, 1 start bit, 2..9 data bits, 10 stop bit
    int des_cnt = 0;
    uint32_t des_byte = 0;
    std::vector<uint8_t> outq;
    size_t out_sent = 0;
    bool peer_open = true;
    long silent = 0;         // cycles since the last line activity
    std::string cmd;

    while (true) {
        for (int i = 0; i < batch; i++) {
            if (ser_bits == 0 && in_len) {
                ser_frame = (uint32_t(inq[in_head]) << 1) | (1u << 9);  // start 0, 8 data, stop 1
                in_head = (in_head + 1) & (inq.size() - 1);
                in_len--;
                ser_bits = 10;
                ser_cnt = cpb;
                st.to_dut++;
            }
            top->rx = ser_bits ? (ser_frame & 1) : 1;
            top->clk = 1;
            top->eval();
            const int tx = top->tx;
            if (ser_bits && --ser_cnt == 0) {
                ser_frame >>= 1;
                ser_bits--;
                ser_cnt = cpb;
            }
            if (des_state == 0) {
                if (!tx) { des_state = 1; des_cnt = cpb / 2; }
            } else if (--des_cnt == 0) {
                if (des_state == 1) {
                    if (tx) des_state = 0;  // a glitch, not a start bit
                    else { des_state = 2; des_cnt = cpb; des_byte = 0; }
                } else if (des_state < 10) {
                    des_byte |= uint32_t(tx) << (des_state - 2);
                    des_state++;
                    des_cnt = cpb;
                } else {
                    if (tx) { outq.push_back((uint8_t)des_byte); st.from_dut++; }
                    else st.frame_errors++;
                    des_state = 0;
                }
            }
            top->clk = 0;
            top->eval();
        }
        st.cycles += batch;
        bool line_busy = ser_bits || des_state || in_len || !top->tx;
        silent = line_busy ? 0 : silent + batch;

        // Socket I/O (non-blocking).
        if (out_sent < outq.size()) {
            ssize_t n = send(sock, outq.data() + out_sent, outq.size() - out_sent, 0);
            if (n > 0) out_sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) peer_open = false;
            if (out_sent == outq.size()) { outq.clear(); out_sent = 0; }
        }
        if (peer_open && in_len < inq.size()) {
            size_t tail = (in_head + in_len) & (inq.size() - 1);
            size_t room = std::min(inq.size() - in_len, inq.size() - tail);
            ssize_t n = recv(sock, inq.data() + tail, room, 0);
            if (n > 0) { in_len += (size_t)n; silent = 0; }
            else if (n == 0) peer_open = false;
            else if (errno != EAGAIN && errno != EWOULDBLOCK) peer_open = false;
        }
        if (stdin_open) {
            char buf[256];
            ssize_t n = read(0, buf, sizeof buf);
            if (n == 0) stdin_open = false;
            for (ssize_t k = 0; k < n; k++) {
                if (buf[k] != '\n') { cmd.push_back(buf[k]); continue; }
                if (cmd == "stats") print_stats(st, cpb, "STATS");
                cmd.clear();
            }
        }
        if (!peer_open) break;
        if (max_cycles && (long long)st.cycles >= max_cycles) break;

        // Idle: nothing on the lines, nothing queued, the design idle -> wait for the host.
#ifdef MIXPE_HAS_BUSY
        bool design_idle = !top->busy && silent >= idle_cycles;
#else
        bool design_idle = silent >= idle_cycles;
#endif
        if (design_idle && !line_busy && outq.empty()) {
            pollfd fds[2] = {{sock, POLLIN, 0}, {0, POLLIN, 0}};
            auto t = Clock::now();
#ifdef MIXPE_HAS_BUSY
            int timeout = -1;
#else
            int timeout = 10;  // the design might still be working: only slow it down
#endif
            poll(fds, stdin_open ? 2 : 1, timeout);
            st.blocked_s += std::chrono::duration<double>(Clock::now() - t).count();
        }
    }
    print_stats(st, cpb, "EXIT");
    close(sock);
    top->final();
    delete top;
    return 0;
}
