#!/usr/bin/python3
"""Benchmark peers, run inside the sandbox namespaces by bench_enforce.py.

  server --bulk-port P --conn-port Q [--cpu N]
      P: reads everything, on EOF answers with the byte count (8 bytes, be)
      Q: reads one ClientHello, then closes (server closes first, so the
         client's ephemeral ports are not parked in TIME_WAIT)
  bulk HOST:PORT --seconds S [--cpu N]
      sends a valid TLS ClientHello, then streams bulk bytes for S seconds;
      prints {"bytes", "seconds", "gbit_s"} as measured by the receiver's count
  conn HOST:PORT --seconds S [--cpu N]
      sequential new connections: connect, send ClientHello, wait for the
      server's close; prints {"conns", "errors", "seconds", "conn_s"}

The ClientHello is synthetic but well formed (record 0x16 0x0301, handshake
type 1, consistent lengths, client_version 0x0303, supported_versions
extension, padded to 517 bytes like OpenSSL's), so tlswall judges the flow as
TLS and every later packet takes the verified-flow fast path.
Only 198.18.0.0/15 and 2001:db8::/32 addresses are accepted.
"""

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

_ALLOWED = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]


def client_hello(total: int = 517) -> bytes:
    ciphers = [0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0xC02B, 0xC02F, 0xCCA9, 0xCCA8]
    exts = b""
    exts += struct.pack("!HHB", 0x002B, 5, 4) + struct.pack("!HH", 0x0304, 0x0303)  # supported_versions
    exts += struct.pack("!HHH", 0x000A, 4, 2) + struct.pack("!H", 0x001D)  # supported_groups x25519
    exts += struct.pack("!HHH", 0x000D, 4, 2) + struct.pack("!H", 0x0804)  # signature_algorithms
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32)
            + struct.pack("!H", 2 * len(ciphers)) + b"".join(struct.pack("!H", c) for c in ciphers)
            + b"\x01\x00")
    fixed = 5 + 4 + len(body) + 2 + len(exts) + 4  # + padding ext header
    pad = max(0, total - fixed)
    exts += struct.pack("!HH", 0x0015, pad) + b"\x00" * pad  # padding
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


HELLO = client_hello()


def _pin(cpu):
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def _target(s: str):
    host, _, port = s.rpartition(":")
    host = host.strip("[]")
    ip = ipaddress.ip_address(host)
    if not any(ip in n for n in _ALLOWED):
        raise SystemExit(f"refusing non-test address {host}")
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), host, int(port)


def _listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(4096)
    return s


def _bulk_conn(c: socket.socket):
    buf = bytearray(1 << 20)
    total = 0
    c.settimeout(60)
    try:
        while True:
            n = c.recv_into(buf)
            if n == 0:
                break
            total += n
        c.sendall(struct.pack("!Q", total))
    except OSError:
        pass
    finally:
        c.close()


def serve(bulk_port: int, conn_port: int, cpu):
    _pin(cpu)
    lb, lc = _listener(bulk_port), _listener(conn_port)

    def bulk_loop():
        while True:
            c, _ = lb.accept()
            threading.Thread(target=_bulk_conn, args=(c,), daemon=True).start()

    threading.Thread(target=bulk_loop, daemon=True).start()
    need = len(HELLO)
    while True:
        c, _ = lc.accept()
        try:
            c.settimeout(5)
            got = 0
            while got < need:
                d = c.recv(4096)
                if not d:
                    break
                got += len(d)
        except OSError:
            pass
        finally:
            c.close()


def bulk(target: str, seconds: float, cpu) -> dict:
    _pin(cpu)
    fam, host, port = _target(target)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect((host, port))
    s.sendall(HELLO)
    chunk = memoryview(b"\xa5" * (1 << 20))
    t0 = time.monotonic()
    end = t0 + min(seconds, 60)
    while time.monotonic() < end:
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while len(got) < 8:
        d = s.recv(8 - len(got))
        if not d:
            break
        got += d
    el = time.monotonic() - t0
    s.close()
    if len(got) != 8:
        return {"error": "no byte count from sink (flow blocked?)", "seconds": el}
    n = struct.unpack("!Q", got)[0] - len(HELLO)
    return {"bytes": n, "seconds": round(el, 4), "gbit_s": round(n * 8 / el / 1e9, 4)}


def conn(target: str, seconds: float, cpu) -> dict:
    _pin(cpu)
    fam, host, port = _target(target)
    n = errors = 0
    t0 = time.monotonic()
    end = t0 + min(seconds, 60)
    while time.monotonic() < end and n < 2_000_000:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect((host, port))
            s.sendall(HELLO)
            s.recv(1)  # the server's close
            n += 1
        except OSError:
            errors += 1
            if errors > 100:
                break
        finally:
            s.close()
    el = time.monotonic() - t0
    return {"conns": n, "errors": errors, "seconds": round(el, 4), "conn_s": round(n / el, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bulk-port", type=int, required=True)
    s.add_argument("--conn-port", type=int, required=True)
    s.add_argument("--cpu", type=int)
    for name in ("bulk", "conn"):
        p = sub.add_parser(name)
        p.add_argument("target")
        p.add_argument("--seconds", type=float, default=3)
        p.add_argument("--cpu", type=int)
    h = sub.add_parser("hello", help="print the ClientHello as hex")
    a = ap.parse_args()
    if a.cmd == "server":
        serve(a.bulk_port, a.conn_port, a.cpu)
        return 0
    if a.cmd == "hello":
        print(HELLO.hex())
        return 0
    r = bulk(a.target, a.seconds, a.cpu) if a.cmd == "bulk" else conn(a.target, a.seconds, a.cpu)
    print(json.dumps(r), flush=True)
    return 0 if "error" not in r else 1


if __name__ == "__main__":
    sys.exit(main())
