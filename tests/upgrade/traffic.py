#!/usr/bin/python3
"""Continuous traffic for the restart/upgrade end-to-end test, run INSIDE a
sandbox namespace (`ip netns exec <ns> /usr/bin/python3 traffic.py ...`).

One JSON object per finished attempt on stdout (t0/t1 are CLOCK_MONOTONIC,
which is system-wide, so the harness can place them against its own
timeline; w0 is wall-clock time for matching against packet captures):

  mix   threads for the whole --duration:
          tls      a stream of new TLS connections (one request each), v4 + v6
          tlsslow  new TLS connections that wait a few ms between connect()
                   and the ClientHello, so some handshakes are in flight
                   whenever the daemon switches programs or tables
          long     --long long-lived TLS connections, one request every
                   --interval on the same connection through the whole run
                   (any error, stall or reset ends it with ok=false)
          plain    plaintext 'GET / HTTP/1.0' attempts to a protected :80
                   (v4 + v6); "ok" means a response came back
          control  plaintext to an unprotected address (must pass; proves
                   the server-side capture sees payload)
  held  --count plaintext connections to a protected :80, opened --spacing
        apart, each waiting for an answer until the run ends
  once  one plaintext attempt with a long timeout
  inflight  a TLS connection driven step by step by the harness: connect()
        now, the handshake (+1 request) once --handshake-file exists, then
        --requests requests once --request-file exists (used to put a
        handshake between an upgrade's flow-table copy and its switch)

Every socket operation has a timeout; loops are bounded in time and count.
Only 198.18.0.0/15 and 2001:db8::/32 are accepted (netclient._check).
"""

import argparse
import json
import random
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import netclient as N  # noqa: E402

PLAIN_REQ = b"GET / HTTP/1.0\r\n\r\n"
_out_lock = threading.Lock()


def emit(rec: dict) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()


def stamp(rec: dict) -> dict:
    rec["t1"] = time.monotonic()
    rec["elapsed"] = round(rec["t1"] - rec["t0"], 4)
    return rec


def read_http_response(s, deadline: float) -> bytes:
    """One HTTP/1.1 response with Content-Length from a keep-alive stream."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("response headers timed out")
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("EOF in response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    clen = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    while len(body) < clen:
        if time.monotonic() > deadline:
            raise TimeoutError("response body timed out")
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("EOF in response body")
        body += chunk
    if len(body) > clen:
        raise ConnectionError(f"{len(body) - clen} unexpected bytes after the response")
    return head + b"\r\n\r\n" + body


def long_lived(idx: int, host: str, port: int, cafile: str, end: float, interval: float,
               timeout: float) -> None:
    t0 = time.monotonic()
    rec = {"kind": "long", "id": idx, "dst": host, "dport": port, "ok": False, "err": None,
           "requests": 0, "max_rtt": 0.0, "t0": t0, "w0": time.time()}
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.socket(N._fam(host), socket.SOCK_STREAM)
    raw.settimeout(timeout)
    h = f"[{host}]" if ":" in host else host
    req = f"GET / HTTP/1.1\r\nHost: {h}\r\n\r\n".encode()
    try:
        raw.connect((host, port))
        rec["sport"] = raw.getsockname()[1]
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            rec["tls_version"] = s.version()
            n = 0
            while time.monotonic() < end and n < 100000:
                t = time.monotonic()
                s.sendall(req)
                resp = read_http_response(s, t + timeout)
                if not resp.startswith(b"HTTP/1.1 200") or b"tlswall-e2e ok" not in resp:
                    raise ConnectionError(f"unexpected response {resp[:40]!r}")
                rtt = time.monotonic() - t
                n += 1
                rec["requests"] = n
                rec["max_rtt"] = max(rec["max_rtt"], round(rtt, 4))
                time.sleep(max(0.0, interval - rtt))
            rec["ok"] = n > 0
    except (OSError, ssl.SSLError, ValueError) as e:
        rec["err"] = f"{type(e).__name__}: {e}"
        rec["t_err"] = time.monotonic()
    finally:
        raw.close()
    emit(stamp(rec))


def tls_once(host: str, port: int, cafile: str, timeout: float, delay: float, kind: str) -> dict:
    """netclient.tls with an optional pause between connect() and the hello."""
    t0 = time.monotonic()
    if not delay:
        r = N.tls(host, port, cafile, timeout)
        r["kind"], r["t0"], r["w0"] = kind, t0, time.time() - (time.monotonic() - t0)
        return stamp(r)
    rec = {"kind": kind, "dst": host, "dport": port, "ok": False, "err": None, "t0": t0,
           "w0": time.time(), "delay": round(delay, 4)}
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.socket(N._fam(host), socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.connect((host, port))
        rec["sport"] = raw.getsockname()[1]
        time.sleep(delay)
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            h = f"[{host}]" if ":" in host else host
            s.sendall(f"GET / HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            while len(buf) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            rec["ok"] = buf.startswith(b"HTTP/1.1 200")
            if not rec["ok"]:
                rec["err"] = f"unexpected response {buf[:40]!r}"
    except (OSError, ssl.SSLError) as e:
        rec["err"] = f"{type(e).__name__}: {e}"
    finally:
        raw.close()
    return stamp(rec)


def plain_once(host: str, port: int, timeout: float, kind: str) -> dict:
    t0 = time.monotonic()
    w0 = time.time()
    r = N.plain(host, port, PLAIN_REQ, timeout)
    r["kind"], r["t0"], r["w0"] = kind, t0, w0
    return stamp(r)


def loop(fn, end: float, pause: float, max_n: int = 5000) -> None:
    n = 0
    while time.monotonic() < end and n < max_n:
        emit(fn())
        n += 1
        time.sleep(pause)


def held(host: str, port: int, idx: int, hold_until: float, kind: str) -> None:
    """A plaintext connection that is blocked and, with no local socket for
    the agent to destroy, waits for an answer until hold_until."""
    t0 = time.monotonic()
    rec = {"kind": kind, "id": idx, "dst": host, "dport": port, "ok": False, "err": None,
           "bytes": 0, "t0": t0, "w0": time.time()}
    s = socket.socket(N._fam(host), socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        rec["sport"] = s.getsockname()[1]
        s.sendall(PLAIN_REQ)
        buf = b""
        while time.monotonic() < hold_until:
            s.settimeout(max(0.05, min(1.0, hold_until - time.monotonic())))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                rec["err"] = "EOF"
                break
            buf += chunk
        rec["bytes"] = len(buf)
        rec["ok"] = len(buf) > 0
        if rec["err"] is None:
            rec["err"] = "no answer (still blocked at the end)" if not buf else None
    except OSError as e:
        rec["err"] = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    emit(stamp(rec))


def wait_file(path: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if Path(path).exists():
            return True
        time.sleep(0.01)
    return False


def inflight(host: str, port: int, cafile: str, hs_file: str, req_file: str, n: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    h = f"[{host}]" if ":" in host else host
    req = f"GET / HTTP/1.1\r\nHost: {h}\r\n\r\n".encode()
    raw = socket.socket(N._fam(host), socket.SOCK_STREAM)
    raw.settimeout(5)
    try:
        raw.connect((host, port))
        emit({"step": "connected", "sport": raw.getsockname()[1], "t": time.monotonic()})
        if not wait_file(hs_file, deadline):
            emit({"step": "handshake", "ok": False, "err": "never told to start the handshake"})
            return
        s = ssl.create_default_context(cafile=cafile).wrap_socket(raw, server_hostname=host)
        t = time.monotonic()
        s.sendall(req)
        read_http_response(s, t + 5)
        emit({"step": "handshake", "ok": True, "t": time.monotonic(), "tls_version": s.version()})
        if not wait_file(req_file, deadline):
            emit({"step": "requests", "ok": False, "err": "never told to send the requests"})
            return
        rtts = []
        for _ in range(min(n, 100)):
            t = time.monotonic()
            try:
                s.sendall(req)
                read_http_response(s, t + 5)
            except (OSError, ssl.SSLError, ValueError) as e:
                emit({"step": "requests", "ok": False, "rtts": rtts, "err": f"{type(e).__name__}: {e}",
                      "after": round(time.monotonic() - t, 3)})
                return
            rtts.append(round(time.monotonic() - t, 4))
            time.sleep(0.05)
        emit({"step": "requests", "ok": True, "rtts": rtts})
    except (OSError, ssl.SSLError, ValueError) as e:
        emit({"step": "error", "ok": False, "err": f"{type(e).__name__}: {e}"})
    finally:
        raw.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mix")
    m.add_argument("--duration", type=float, default=14)
    m.add_argument("--cafile", required=True)
    m.add_argument("--tls4", default="198.18.130.10:443")
    m.add_argument("--tls6", default="[2001:db8:2::10]:443")
    m.add_argument("--plain4", default="198.18.130.10:80")
    m.add_argument("--plain6", default="[2001:db8:2::10]:80")
    m.add_argument("--control", default="198.18.1.10:80")
    m.add_argument("--long", type=int, default=4)
    m.add_argument("--slow", type=int, default=6, help="threads of delayed-hello TLS connections")
    m.add_argument("--interval", type=float, default=0.1)
    m.add_argument("--plain-timeout", type=float, default=1.5)
    h = sub.add_parser("held")
    h.add_argument("target")
    h.add_argument("--count", type=int, default=3)
    h.add_argument("--spacing", type=float, default=0.7)
    h.add_argument("--hold", type=float, default=14, help="seconds from start until all give up")
    o = sub.add_parser("once")
    o.add_argument("target")
    o.add_argument("--timeout", type=float, default=20)
    f = sub.add_parser("inflight")
    f.add_argument("target")
    f.add_argument("--cafile", required=True)
    f.add_argument("--handshake-file", required=True)
    f.add_argument("--request-file", required=True)
    f.add_argument("--requests", type=int, default=5)
    f.add_argument("--limit", type=float, default=60)
    a = ap.parse_args()

    start = time.monotonic()
    if a.cmd == "inflight":
        host, port = N._hostport(a.target)
        inflight(host, port, a.cafile, a.handshake_file, a.request_file, a.requests, min(a.limit, 120))
        return 0
    if a.cmd == "once":
        host, port = N._hostport(a.target)
        emit(plain_once(host, port, min(a.timeout, 60), "once"))
        return 0
    if a.cmd == "held":
        host, port = N._hostport(a.target)
        until = start + min(a.hold, 60)
        ths = []
        for i in range(min(a.count, 20)):
            t = threading.Thread(target=held, args=(host, port, i, until, "held"), daemon=True)
            t.start()
            ths.append(t)
            time.sleep(a.spacing)
        for t in ths:
            t.join(timeout=max(1.0, until - time.monotonic() + 10))
        return 0

    end = start + min(a.duration, 60)
    t4, p4 = N._hostport(a.tls4)
    t6, p6 = N._hostport(a.tls6)
    pl4, pp4 = N._hostport(a.plain4)
    pl6, pp6 = N._hostport(a.plain6)
    ch, cp = N._hostport(a.control)
    rnd = random.Random(1234)
    ths = []

    def spawn(fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        ths.append(t)

    for i in range(min(a.long, 16)):
        host = t6 if i == min(a.long, 16) - 1 else t4  # the last one over IPv6
        spawn(long_lived, i, host, p4 if host == t4 else p6, a.cafile, end, a.interval, 5.0)
    spawn(loop, lambda: tls_once(t4, p4, a.cafile, 3.0, 0, "tls"), end, 0.05)
    spawn(loop, lambda: tls_once(t6, p6, a.cafile, 3.0, 0, "tls"), end, 0.1)
    for _ in range(min(a.slow, 32)):
        spawn(loop, lambda: tls_once(t4, p4, a.cafile, 3.0, rnd.uniform(0.005, 0.06), "tlsslow"), end, 0.0)
    spawn(loop, lambda: plain_once(pl4, pp4, a.plain_timeout, "plain"), end, 0.1)
    spawn(loop, lambda: plain_once(pl6, pp6, a.plain_timeout, "plain"), end, 0.15)
    spawn(loop, lambda: plain_once(ch, cp, 2.0, "control"), end, 0.5)
    for t in ths:
        t.join(timeout=max(1.0, end - time.monotonic() + 15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
