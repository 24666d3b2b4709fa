#!/usr/bin/python3
"""Small network clients run INSIDE the sandbox's client namespace by the e2e
harness (`ip netns exec <ns> /usr/bin/python3 netclient.py ...`).

Each prints one JSON object per attempt on stdout:
  {"kind", "ok", "err", "elapsed", "bytes", "first", "t0"}
"ok" means a response came back (the flow was not blocked). Every socket
operation has a timeout, loops are bounded in count and time.
Only addresses in 198.18.0.0/15 and 2001:db8::/32 are accepted.
"""

import argparse
import ipaddress
import json
import socket
import ssl
import sys
import time

_ALLOWED = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]


def _check(host: str) -> str:
    ip = ipaddress.ip_address(host)
    if not any(ip in n for n in _ALLOWED):
        raise SystemExit(f"refusing non-test address {host}")
    return host


def _fam(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _hostport(s: str):
    host, _, port = s.rpartition(":")
    return _check(host.strip("[]")), int(port)


def plain(host: str, port: int, payload: bytes, timeout: float) -> dict:
    t0 = time.monotonic()
    res = {"kind": "plain", "dst": host, "dport": port, "ok": False, "err": None, "bytes": 0, "first": "", "t0": t0}
    s = socket.socket(_fam(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        res["sport"] = s.getsockname()[1]
        s.sendall(payload)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(buf) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if payload.startswith(b"GET") and b"\r\n\r\n" in buf:
                break
            if not payload.startswith(b"GET") and len(buf) >= len(payload):
                break
        res["bytes"] = len(buf)
        res["first"] = buf[:40].decode(errors="replace").splitlines()[0] if buf else ""
        res["ok"] = len(buf) > 0
        if not buf:
            res["err"] = "EOF without data"
    except OSError as e:
        res["err"] = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    res["elapsed"] = round(time.monotonic() - t0, 4)
    return res


def tls(host: str, port: int, cafile: str, timeout: float, min_version=None, max_version=None) -> dict:
    t0 = time.monotonic()
    res = {"kind": "tls", "dst": host, "dport": port, "ok": False, "err": None, "bytes": 0, "first": "", "t0": t0}
    ctx = ssl.create_default_context(cafile=cafile)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    raw = socket.socket(_fam(host), socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.connect((host, port))
        res["sport"] = raw.getsockname()[1]
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            res["tls_version"] = s.version()
            s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
            buf = b""
            while len(buf) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            res["bytes"] = len(buf)
            res["first"] = buf[:40].decode(errors="replace").splitlines()[0] if buf else ""
            res["ok"] = buf.startswith(b"HTTP/1.1 200")
            if not res["ok"]:
                res["err"] = "unexpected response"
    except (OSError, ssl.SSLError) as e:
        res["err"] = f"{type(e).__name__}: {e}"
    finally:
        raw.close()
    res["elapsed"] = round(time.monotonic() - t0, 4)
    return res


def http_get(host: str) -> bytes:
    h = f"[{host}]" if ":" in host else host
    return f"GET / HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n".encode()


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plain")
    p.add_argument("target")
    p.add_argument("--data", default=None, help="payload (default: HTTP GET)")
    p.add_argument("--timeout", type=float, default=5)
    t = sub.add_parser("tls")
    t.add_argument("target")
    t.add_argument("--cafile", required=True)
    t.add_argument("--timeout", type=float, default=5)
    lp = sub.add_parser("loop", help="alternate plaintext and TLS requests")
    lp.add_argument("--plain", required=True)
    lp.add_argument("--tls", required=True)
    lp.add_argument("--cafile", required=True)
    lp.add_argument("--duration", type=float, default=6)
    lp.add_argument("--max", type=int, default=400)
    lp.add_argument("--interval", type=float, default=0.05)
    lp.add_argument("--timeout", type=float, default=3)
    a = ap.parse_args()

    if a.cmd == "plain":
        host, port = _hostport(a.target)
        payload = a.data.encode().decode("unicode_escape").encode() if a.data else http_get(host)
        r = plain(host, port, payload, a.timeout)
        print(json.dumps(r), flush=True)
        return 0 if r["ok"] else 1
    if a.cmd == "tls":
        host, port = _hostport(a.target)
        r = tls(host, port, a.cafile, a.timeout)
        print(json.dumps(r), flush=True)
        return 0 if r["ok"] else 1
    if a.cmd == "loop":
        ph, pp = _hostport(a.plain)
        th, tp = _hostport(a.tls)
        end = time.monotonic() + min(a.duration, 30)
        n = 0
        while time.monotonic() < end and n < min(a.max, 2000):
            print(json.dumps(plain(ph, pp, http_get(ph), a.timeout)), flush=True)
            print(json.dumps(tls(th, tp, a.cafile, a.timeout)), flush=True)
            n += 1
            time.sleep(a.interval)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
