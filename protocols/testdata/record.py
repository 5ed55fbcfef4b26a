#!/usr/bin/env python3
"""Records one PostgreSQL session's bytes, each direction to its own file.

Usage: record.py LISTEN_PORT UPSTREAM_PORT OUT_PREFIX [NTH]
Relays client connections on 127.0.0.1:LISTEN_PORT to 127.0.0.1:UPSTREAM_PORT
and records the NTH (default 1) as OUT_PREFIX.frontend.bin / .backend.bin.
Used once to make the codec's recorded-traffic test vectors (see pg_recorded.rs).
"""
import socket, sys, threading  # noqa: E401

listen_port, upstream_port, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen_port))
srv.listen(1)
nth = int(sys.argv[4]) if len(sys.argv) > 4 else 1
for i in range(nth):
    client, _ = srv.accept()
    up = socket.create_connection(("127.0.0.1", upstream_port))
    if i + 1 < nth:
        # Not the one to record: relay it in the background.
        for s_, d_ in ((client, up), (up, client)):
            threading.Thread(target=lambda s_=s_, d_=d_: [d_.sendall(b) for b in iter(lambda: s_.recv(65536), b"")], daemon=True).start()

def pump(src, dst, path):
    with open(path, "wb") as f:
        while True:
            data = src.recv(65536)
            if not data:
                break
            f.write(data)
            dst.sendall(data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

a = threading.Thread(target=pump, args=(client, up, prefix + ".frontend.bin"))
b = threading.Thread(target=pump, args=(up, client, prefix + ".backend.bin"))
a.start(); b.start(); a.join(); b.join()
