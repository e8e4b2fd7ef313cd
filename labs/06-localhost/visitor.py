#!/usr/bin/env python3
"""Lab 06's visitor, on the internet host: load for an echo service behind
a public port. Standard library only.

  visitor.py tcp HOST PORT [--connections 50] [--bytes 1000000]
      opens that many connections at once; each sends that many random
      bytes (then closes its sending half) while it reads the echo back,
      and compares the sha256 of what it sent and what came back. Prints a
      line per connection that failed, then one summary line:
      "tcp: 50 of 50 connections intact (50000000 bytes each way) in 1.23 s"

  visitor.py udp HOST PORT [--count 20] [--size 512]
      sends that many datagrams of random bytes, one at a time, each
      waiting up to --wait seconds for its echo. Prints one line:
      "udp: 20 sent, 20 answered, 20 equal"

The exit status is 0 only when everything came back intact. Every
connection and every datagram is bounded by --timeout / --wait, so the
script always ends.
"""

import argparse
import hashlib
import os
import socket
import sys
import threading
import time


def one_connection(host, port, size, timeout, results, index):
    payload = os.urandom(size)
    want = hashlib.sha256(payload).hexdigest()
    got = hashlib.sha256()
    received = 0
    error = []
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        results[index] = f"connection {index}: connect: {e}"
        return

    def send():
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            error.append(f"send: {e}")

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got.update(data)
            received += len(data)
    except OSError as e:
        error.append(f"receive: {e}")
    sender.join(timeout)
    sock.close()
    if error:
        results[index] = f"connection {index}: {'; '.join(error)} after {received} bytes back"
    elif received != size or got.hexdigest() != want:
        results[index] = (
            f"connection {index}: {received} of {size} bytes back, "
            f"sha256 {got.hexdigest()[:16]} instead of {want[:16]}"
        )
    else:
        results[index] = None


def tcp(args):
    results = ["not finished"] * args.connections
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=one_connection,
            args=(args.host, args.port, args.bytes, args.timeout, results, i),
            daemon=True,
        )
        for i in range(args.connections)
    ]
    for t in threads:
        t.start()
    deadline = started + args.timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    secs = time.monotonic() - started
    bad = [r if r else f"connection {i}: not finished" for i, r in enumerate(results) if r is not None]
    for line in bad:
        print(line)
    ok = args.connections - len(bad)
    print(
        f"tcp: {ok} of {args.connections} connections intact "
        f"({args.bytes} bytes each way) in {secs:.2f} s"
    )
    return 0 if not bad else 1


def udp(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(args.wait)
    sock.connect((args.host, args.port))
    answered = equal = 0
    for _ in range(args.count):
        payload = os.urandom(args.size)
        try:
            sock.send(payload)
            data = sock.recv(65535)
        except OSError:
            continue
        answered += 1
        equal += data == payload
    print(f"udp: {args.count} sent, {answered} answered, {equal} equal")
    return 0 if equal == args.count else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("tcp")
    t.add_argument("host")
    t.add_argument("port", type=int)
    t.add_argument("--connections", type=int, default=50)
    t.add_argument("--bytes", type=int, default=1_000_000)
    t.add_argument("--timeout", type=float, default=30.0)
    u = sub.add_parser("udp")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("--count", type=int, default=20)
    u.add_argument("--size", type=int, default=512)
    u.add_argument("--wait", type=float, default=1.0)
    args = parser.parse_args()
    sys.exit(tcp(args) if args.mode == "tcp" else udp(args))


if __name__ == "__main__":
    main()
