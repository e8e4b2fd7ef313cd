#!/usr/bin/env python3
"""Lab 05's "internet" host: a web server and a name server, standard
library only.

HTTP on port 80, IPv4 and IPv6 (one socket, [::]:80, dual-stack):

  GET /          one line, "you are ADDRESS": the address the connection
                 came from, as this host sees it
  GET /bytes/N   N random bytes (at most 100 MB), with a Content-Length
  GET /file      the file given with --file

DNS on UDP port 53 of the address given with --dns: every A question is
answered with 198.51.100.2, every AAAA question with 2001:db8:100::2, any
other type with no answer. Each request and each question is logged on
stderr with the address it came from.

Run by `tunlab run 05`; by hand, in the lab host (as root):
  python3 internet.py --dns 198.51.100.53 --file some-file
"""

import argparse
import os
import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

A_ANSWER = socket.inet_pton(socket.AF_INET, "198.51.100.2")
AAAA_ANSWER = socket.inet_pton(socket.AF_INET6, "2001:db8:100::2")
MAX_BYTES = 100_000_000
CHUNK = 64 * 1024
FILE = None


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def peer(address):
    """The client's address, without the ::ffff: of an IPv4 client on a
    dual-stack socket."""
    host = address[0]
    return host[7:] if host.startswith("::ffff:") else host


class Handler(BaseHTTPRequestHandler):
    # One request per connection: curl, and the lab, need no more.
    protocol_version = "HTTP/1.0"
    server_version = "tunlab-internet"
    sys_version = ""

    def do_GET(self):
        if self.path == "/":
            self.send_bytes(f"you are {peer(self.client_address)}\n".encode())
        elif self.path.startswith("/bytes/"):
            try:
                n = int(self.path[len("/bytes/"):])
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_BYTES:
                self.send_error(400, f"N must be 0 to {MAX_BYTES}")
                return
            self.send_header_for(n, "application/octet-stream")
            left = n
            while left > 0:
                chunk = os.urandom(min(CHUNK, left))
                self.wfile.write(chunk)
                left -= len(chunk)
        elif self.path == "/file" and FILE:
            size = os.path.getsize(FILE)
            self.send_header_for(size, "application/octet-stream")
            with open(FILE, "rb") as f:
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)
        else:
            self.send_error(404)

    def send_bytes(self, body):
        self.send_header_for(len(body), "text/plain")
        self.wfile.write(body)

    def send_header_for(self, length, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, fmt, *args):
        log(f"http: {peer(self.client_address)} {fmt % args}")


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        # IPv4 clients too, as ::ffff:a.b.c.d.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would look up its own name (getfqdn): skip
        # that, this host has no name server of its own.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "internet"
        self.server_port = self.server_address[1]


def question(query):
    """The name, type and the question's bytes of a DNS query (RFC 1035
    4.1.2), or None."""
    if len(query) < 12 or struct.unpack("!H", query[4:6])[0] != 1:
        return None
    labels, at = [], 12
    while at < len(query) and query[at] != 0:
        n = query[at]
        if n > 63:
            return None
        labels.append(query[at + 1:at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    end = at + 5
    if end > len(query):
        return None
    qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
    return ".".join(labels), qtype, query[12:end]


def answer(query):
    asked = question(query)
    if asked is None:
        return None, None
    name, qtype, q = asked
    rdata = {1: A_ANSWER, 28: AAAA_ANSWER}.get(qtype)
    # Response, the query's opcode and RD bit, RA; no error.
    flags = 0x8080 | (struct.unpack("!H", query[2:4])[0] & 0x7900)
    header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if rdata else 0, 0, 0)
    reply = header + q
    if rdata:
        # The name as a pointer to the question's (offset 12), class IN,
        # TTL 60.
        reply += struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
    kind = {1: "A", 28: "AAAA"}.get(qtype, f"type {qtype}")
    return reply, f"{kind} {name}"


def serve_dns(address):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    while True:
        query, client = sock.recvfrom(4096)
        reply, asked = answer(query)
        if reply is None:
            log(f"dns: {peer(client)} sent something that is not a query")
            continue
        log(f"dns: {peer(client)} asks {asked}")
        sock.sendto(reply, client)


def main():
    global FILE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--dns", metavar="ADDRESS", help="answer DNS on ADDRESS:53")
    parser.add_argument("--file", help="the file GET /file sends")
    args = parser.parse_args()
    FILE = args.file
    if args.dns:
        threading.Thread(target=serve_dns, args=(args.dns,), daemon=True).start()
    server = Server(("::", args.port), Handler)
    log(f"http: listening on [::]:{args.port}" + (f", dns on {args.dns}:53" if args.dns else ""))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
