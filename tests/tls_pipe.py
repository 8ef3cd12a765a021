#!/usr/bin/env python3
"""A TLS client written with Python's ssl module, for tests/tls.rs: relays stdin lines to
a TLS connection and the connection's bytes to stdout. The first stdout line is
`CONNECTED <version> <alpn or -> <local port>`; a failed handshake prints `FAILED <reason>` and exits 1.

usage: tls_pipe.py HOST PORT CA_FILE SNI [--tls12] [--alpn PROTO] [--proxy-v1 SRC_IP]
                   [--raw-alert]

--proxy-v1 sends a PROXY v1 header naming SRC_IP before the handshake. --raw-alert writes
a fatal alert record outside the session right after the handshake, then prints CLOSED
when the server closes. A stdin line `#STOP` stops reading the connection (a client
that never reads)."""
import os
import select
import socket
import ssl
import sys

host, port, ca, sni = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if "--tls12" in sys.argv:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
if "--alpn" in sys.argv:
    ctx.set_alpn_protocols([sys.argv[sys.argv.index("--alpn") + 1]])
try:
    raw = socket.create_connection((host, port), timeout=10)
    if "--proxy-v1" in sys.argv:
        src = sys.argv[sys.argv.index("--proxy-v1") + 1]
        raw.sendall(("PROXY TCP4 %s 127.0.0.1 40000 %d\r\n" % (src, port)).encode())
    conn = ctx.wrap_socket(raw, server_hostname=sni)
except (ssl.SSLError, OSError) as e:
    print("FAILED", e, flush=True)
    sys.exit(1)
print("CONNECTED", conn.version(), conn.selected_alpn_protocol() or "-", conn.getsockname()[1], flush=True)
if "--raw-alert" in sys.argv:
    # level fatal (2), description handshake_failure (40), as a plaintext record.
    side = socket.socket(fileno=os.dup(conn.fileno()))
    side.sendall(b"\x15\x03\x03\x00\x02\x02\x28")
    side.settimeout(10)
    try:
        while side.recv(4096):
            pass
        print("CLOSED", flush=True)
    except OSError as e:
        print("CLOSED", e, flush=True)
    sys.exit(0)
conn.setblocking(False)
reading = True
out = sys.stdout.buffer
stdin = sys.stdin.buffer.raw
while True:
    ready, _, _ = select.select([conn, stdin] if reading else [stdin], [], [], 30)
    if not ready:
        break
    if stdin in ready:
        data = stdin.read(65536)
        if not data:
            break
        if data.strip() == b"#STOP":
            reading = False
            continue
        conn.setblocking(True)
        conn.sendall(data)
        conn.setblocking(False)
    if conn in ready:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    sys.exit(0)
                out.write(data)
                out.flush()
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, OSError):
            sys.exit(0)
