#!/usr/bin/python3
"""Peers of the evasion e2e (test_evasion_e2e.py), run inside the sandbox's
namespaces. Only 198.18.0.0/15 and 2001:db8::/32 addresses are used.

  server LOG
      Dual-stack listener on 443 (TCP Fast Open on): per connection, one
      JSON line {"lport", "peer", "sport", "bytes", "head"} when it ends
      (EOF, reset, or 3 s of silence), so the test knows what got through.
  case NAME DST [ARGS]
      One evasion attempt with the kernel's own TCP stack; prints one JSON
      line {"case", "sport", "sent", "error"}.
  craft NAME DST SRC
      One attempt with crafted packets (scapy) from SRC, an address the
      client namespace does not own: the server's answers reach scapy's
      capture but not the kernel, which would otherwise reset the unknown
      connection. Prints the same JSON line.
  udp_server LOG PORT...
      Dual-stack UDP listeners: one JSON line {"lport", "peer", "sport",
      "bytes", "head"} per datagram received.
  udp NAME DST PORT
      One UDP flow (a connected socket) sending the datagrams of UDP_CASES
      NAME; prints {"case", "sport", "sent", "datagrams"}.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from bench_peer import client_hello  # noqa: E402

PORT = 443
HELLO = client_hello()
PLAIN = b"GET / HTTP/1.1\r\nHost: evasion.tlswall.test\r\nUser-Agent: evasion\r\n\r\n"
TCP_FASTOPEN = 23
TCP_FASTOPEN_CONNECT = 30


def records(hs: bytes, sizes: list[int]) -> bytes:
    """The handshake message of HELLO cut into TLS records of these sizes
    (the rest in a last record)."""
    out, off = b"", 0
    for n in sizes + [len(hs)]:
        part = hs[off:off + n]
        if not part:
            break
        out += b"\x16\x03\x01" + struct.pack("!H", len(part)) + part
        off += len(part)
    return out


# -- server ---------------------------------------------------------------------
def server(log_path: str) -> int:
    lock = threading.Lock()
    log = open(log_path, "a", buffering=1)
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 64)
    ls.bind(("::", PORT))
    ls.listen(256)

    def serve(c: socket.socket, peer) -> None:
        got = b""
        n = 0
        c.settimeout(3)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
                if len(got) < 16:
                    got += d[:16 - len(got)]
        except OSError:
            pass
        host = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
        with lock:
            log.write(json.dumps({"lport": PORT, "peer": host, "sport": peer[1], "bytes": n,
                                  "head": got.hex()}) + "\n")
        c.close()

    while True:
        c, peer = ls.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()


# -- kernel-stack cases ---------------------------------------------------------------
def family_of(dst: str) -> int:
    return socket.AF_INET6 if ":" in dst else socket.AF_INET


def connect(dst: str, opts: tuple = ()) -> socket.socket:
    s = socket.socket(family_of(dst), socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for lvl, opt, v in opts:
        s.setsockopt(lvl, opt, v)
    s.settimeout(3)
    return s


def finish(s: socket.socket, wait: float = 0.3) -> str:
    time.sleep(wait)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError as e:
        return type(e).__name__
    return ""


def dribble(s: socket.socket, data: bytes) -> str:
    try:
        for i in range(len(data)):
            s.send(data[i:i + 1])
            time.sleep(0.002)  # NODELAY + a pause: one segment per byte
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return ""


BIG = b"x" * 65536  # one 64 KiB write after the first bytes: one large skb with GSO/TSO
# The same 64 KiB as TLS application-data records: what follows a ClientHello
# must be records (the classifier walks the next record headers).
BIG_RECORDS = b"".join(b"\x17\x03\x03" + struct.pack("!H", 16379) + b"x" * 16379 for _ in range(4))

# Kernel-stack cases: how the bytes go out, and which bytes.
CASES = {
    "hello": ("send", HELLO),
    "plain": ("send", PLAIN),
    "hello_records": ("send", records(HELLO[5:], [100, 200])),
    "hello_tiny_first_record": ("send", records(HELLO[5:], [4])),
    "big_hello": ("send", HELLO + BIG_RECORDS),
    "big_plain": ("send", PLAIN + BIG),
    "v4mapped_hello": ("v4mapped", HELLO),  # AF_INET6 socket to ::ffff:<IPv4>
    "v4mapped_plain": ("v4mapped", PLAIN),
    "hello_1byte": ("dribble", HELLO),
    "plain_1byte": ("dribble", PLAIN),
    "tfo_hello": ("fastopen", HELLO),  # sendto(MSG_FASTOPEN): data in the SYN
    "tfo_plain": ("fastopen", PLAIN),
    "tfo_connect_hello": ("fastopen_connect", HELLO),  # TCP_FASTOPEN_CONNECT
    "tfo_connect_plain": ("fastopen_connect", PLAIN),
    "reuse_5tuple": ("reuse", HELLO + PLAIN),
}


def case(name: str, dst: str) -> dict:
    if name not in CASES:
        raise SystemExit(f"unknown case {name}")
    how, data = CASES[name]
    out = {"case": name, "sport": 0, "sent": 0, "error": ""}
    addr = (dst, PORT)
    try:
        if how == "reuse":
            # The same 5-tuple twice: TLS first, then plaintext. Closed with
            # RST so no TIME_WAIT holds the tuple.
            out["sport"] = 40000 + os.getpid() % 20000
            for part in (HELLO, PLAIN):
                s = connect(dst, ((socket.SOL_SOCKET, socket.SO_REUSEADDR, 1),))
                s.bind(("", out["sport"]))
                s.connect(addr)
                s.sendall(part)
                out["sent"] += len(part)
                finish(s, 0.4)
                time.sleep(0.2)
            return out
        if how == "v4mapped":
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect(("::ffff:" + dst, PORT))
        elif how == "fastopen":
            s = connect(dst)
        elif how == "fastopen_connect":
            s = connect(dst, ((socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1),))
            s.connect(addr)  # returns at once; the first send goes in the SYN
        else:
            s = connect(dst)
            s.connect(addr)
        if how == "fastopen":
            s.sendto(data, socket.MSG_FASTOPEN, addr)  # connects, data in the SYN (with a cookie)
        out["sport"] = s.getsockname()[1]  # before sending: a blocked send raises
        if how == "dribble":
            out["error"] = dribble(s, data)
        elif how != "fastopen":
            s.sendall(data)
        out["sent"] = len(data)
        finish(s, 0.5 if len(data) > len(BIG) else 0.3)
    except OSError as e:
        out["error"] = out["error"] or f"{type(e).__name__}: {e}"
    return out


# -- UDP ---------------------------------------------------------------------------------
def quic_initial(version: int = 1, size: int = 1200) -> bytes:
    """A client's first QUIC datagram as the classifier judges it (RFC 9000
    17.2.2): long header, Initial type (0b00 in v1; 0b01 in v2, RFC 9369),
    version, 8-byte DCID, empty SCID and token, padded to `size` bytes.
    The protected payload is filler: only the header is judged."""
    ptype = 1 if version == 0x6B3343CF else 0
    head = bytes([0xC0 | (ptype << 4) | 0x03]) + struct.pack("!I", version) + bytes([8]) + bytes(range(0xA0, 0xA8))
    head += b"\x00\x00"  # SCID length, token length
    head += struct.pack("!H", 0x4000 | (size - len(head) - 2))
    return head + b"\x5a" * (size - len(head))


SHORT_HEADER = b"\x41" + b"\x33" * 1199  # a 1-RTT packet: not an Initial

# UDP flows: the datagrams each sends, in order.
UDP_CASES = {
    "plain": [b"tlswall udp plaintext %d" % i for i in range(3)],
    "short_header": [SHORT_HEADER, SHORT_HEADER],
    "quic_initial": [quic_initial(1), SHORT_HEADER],
    "quic_v2_initial": [quic_initial(0x6B3343CF), SHORT_HEADER],
}


def udp_server(log_path: str, ports: list[int]) -> int:
    lock = threading.Lock()
    log = open(log_path, "a", buffering=1)

    def serve(port: int) -> None:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        while True:
            d, peer = s.recvfrom(65536)
            host = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
            with lock:
                log.write(json.dumps({"lport": port, "peer": host, "sport": peer[1], "bytes": len(d),
                                      "head": d[:16].hex()}) + "\n")

    for p in ports:
        threading.Thread(target=serve, args=(p,), daemon=True).start()
    while True:
        time.sleep(3600)


def udp_flow(name: str, dst: str, port: int) -> dict:
    if name not in UDP_CASES:
        raise SystemExit(f"unknown udp case {name}")
    out = {"case": name, "sport": 0, "sent": 0, "datagrams": 0, "error": ""}
    s = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    try:
        s.connect((dst, port))
        out["sport"] = s.getsockname()[1]
        for d in UDP_CASES[name]:
            s.send(d)  # a datagram dropped at tc egress is not an error here (ENOBUFS is hidden)
            out["sent"] += len(d)
            out["datagrams"] += 1
            time.sleep(0.05)
    except OSError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    return out


# -- crafted cases (scapy) ---------------------------------------------------------------
def craft(name: str, dst: str, src: str) -> dict:
    from scapy.all import IP, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrRouting, TCP, conf, fragment6, send, sr1  # noqa: E402
    conf.verb = 0
    v6 = ":" in dst
    sport = 20000 + os.getpid() % 20000
    out = {"case": name, "sport": sport, "sent": 0, "error": ""}

    def ip(ext=None):
        if not v6:
            return IP(src=src, dst=dst)
        p = IPv6(src=src, dst=dst)
        return p / ext if ext is not None else p

    if name.startswith(("vlan_", "qinq_")):
        return craft_tagged(name, dst, src, sport, out)
    # A routing header on the data segments (segments left 0: the receiver
    # skips it), which the classifier must look through to find TCP.
    rh = IPv6ExtHdrRouting(type=0, segleft=0, addresses=[]) if name.startswith("v6_routing") else None
    syn = ip() / TCP(sport=sport, dport=PORT, flags="S", seq=1000, options=[("MSS", 1400)])
    synack = sr1(syn, timeout=2)
    if synack is None or not synack.haslayer(TCP) or synack[TCP].flags & 0x12 != 0x12:
        out["error"] = "no SYN-ACK"
        return out
    ack = synack[TCP].seq + 1
    base = 1001

    def seg(off: int, data: bytes, ext=None, flags="PA", frag: int = 0):
        p = ip(ext) / TCP(sport=sport, dport=PORT, flags=flags, seq=base + off, ack=ack) / data
        for x in fragment6(p, frag) if frag else [p]:
            try:
                send(x)
            except OSError:
                out["dropped_at_send"] = out.get("dropped_at_send", 0) + 1  # the tc drop, as ENOBUFS
        out["sent"] = max(out["sent"], off + len(data))  # stream bytes, not retransmissions
        time.sleep(0.05)

    send(ip() / TCP(sport=sport, dport=PORT, flags="A", seq=base, ack=ack))
    if name == "overlap_mismatch":
        seg(0, HELLO[:20])
        seg(0, PLAIN[:20])  # the same bytes again, different: a rewrite
        seg(20, PLAIN[20:])
    elif name == "out_of_order_hello":
        seg(20, HELLO[20:200])  # ahead of the gap
        seg(0, HELLO[:20])
        seg(20, HELLO[20:200])  # the retransmission that fills it
        seg(200, HELLO[200:])
    elif name == "out_of_order_plain":
        seg(5, PLAIN[5:])
        seg(0, PLAIN[:5])
        seg(5, PLAIN[5:])
    elif name == "v6_routing_plain":
        seg(0, PLAIN, rh)
    elif name == "v6_routing_hello":
        seg(0, HELLO, rh)
    elif name == "v6_atomic_fragment_plain":
        # An atomic fragment (offset 0, no more fragments) hides nothing: the
        # classifier looks through the header and judges the TCP payload.
        seg(0, PLAIN, IPv6ExtHdrFragment(offset=0, m=0, id=0x7777))
    elif name == "v6_fragments_plain":
        # The segment in real fragments (the TCP header in the first, the
        # payload spread over the rest): fragments toward an enforce boundary
        # are dropped, whatever they carry.
        seg(0, PLAIN, IPv6ExtHdrFragment(id=0x7778), frag=96)
    else:
        raise SystemExit(f"unknown crafted case {name}")
    time.sleep(0.3)
    try:
        send(ip() / TCP(sport=sport, dport=PORT, flags="R", seq=base + len(HELLO), ack=ack))
    except OSError:
        pass
    return out


def craft_tagged(name: str, dst: str, src: str, sport: int, out: dict) -> dict:
    """A SYN and a first data segment in 802.1Q (vlan_*) or 802.1ad + 802.1Q
    (qinq_*) frames out of eth0. The server side has no VLAN device, so no
    handshake follows: what matters is the classifier's verdict on the
    data (its event, and a drop shows as ENOBUFS at the sender)."""
    from scapy.all import IP, TCP, Dot1AD, Dot1Q, Ether, get_if_hwaddr, sendp  # noqa: E402
    tags = Dot1AD(vlan=200) / Dot1Q(vlan=100) if name.startswith("qinq_") else Dot1Q(vlan=100)
    eth = Ether(src=get_if_hwaddr("eth0"), dst="02:00:00:00:00:01")
    data = HELLO if name.endswith("_hello") else PLAIN
    for flags, seq, payload in (("S", 1000, b""), ("PA", 1001, data)):
        try:
            sendp(eth / tags / IP(src=src, dst=dst) / TCP(sport=sport, dport=PORT, flags=flags, seq=seq,
                                                        ack=1 if flags != "S" else 0) / payload,
                  iface="eth0", verbose=0)
        except OSError:
            out["dropped_at_send"] = out.get("dropped_at_send", 0) + 1  # the tc drop, as ENOBUFS
        time.sleep(0.05)
    out["sent"] = len(data)
    return out


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        return server(sys.argv[2])
    if len(sys.argv) >= 4 and sys.argv[1] == "case":
        print(json.dumps(case(sys.argv[2], sys.argv[3])), flush=True)
        return 0
    if len(sys.argv) >= 4 and sys.argv[1] == "udp_server":
        return udp_server(sys.argv[2], [int(p) for p in sys.argv[3:]])
    if len(sys.argv) >= 5 and sys.argv[1] == "udp":
        print(json.dumps(udp_flow(sys.argv[2], sys.argv[3], int(sys.argv[4]))), flush=True)
        return 0
    if len(sys.argv) >= 5 and sys.argv[1] == "craft":
        print(json.dumps(craft(sys.argv[2], sys.argv[3], sys.argv[4])), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
