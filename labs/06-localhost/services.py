#!/usr/bin/env python3
"""Lab 06's services on the client: three of them, every one listening on
127.0.0.1 only, so that nothing outside the client can reach them, not
even the server on the same link. Standard library only.

  TCP 127.0.0.1:8080   HTTP: GET / answers one line,
                       "hello from NAME: you are ADDRESS", ADDRESS being
                       the address the connection came from, as this
                       service sees it
  TCP 127.0.0.1:9000   echo: sends back every byte it reads, until the
                       other side closes its half
  UDP 127.0.0.1:9000   echo: sends every datagram back to where it came from

Each HTTP request, each echo connection (with its byte count) and each
datagram is logged on stderr with the address it came from.

Run by `tunlab run 06`; by hand, in the lab host (as root):
  python3 services.py --name client
"""

import argparse
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
NAME = "client"


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Page(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "tunlab-client"
    sys_version = ""

    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        body = f"hello from {NAME}: you are {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        log(f"http: {self.client_address[0]} {fmt % args}")


class Web(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # No name lookup of our own address (HTTPServer would getfqdn).
        socketserver.TCPServer.server_bind(self)
        self.server_name = NAME
        self.server_port = self.server_address[1]


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        total = 0
        sock = self.request
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
                total += len(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            log(f"echo: {self.client_address[0]}:{self.client_address[1]} {e}")
        log(f"echo: {self.client_address[0]}:{self.client_address[1]} {total} bytes")


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def udp_echo(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, port))
    while True:
        data, peer = sock.recvfrom(65535)
        log(f"udp: {peer[0]}:{peer[1]} {len(data)} bytes")
        sock.sendto(data, peer)


def main():
    global NAME
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="client", help="the name the page says")
    parser.add_argument("--http", type=int, default=8080, metavar="PORT")
    parser.add_argument("--echo", type=int, default=9000, metavar="PORT", help="TCP and UDP")
    args = parser.parse_args()
    NAME = args.name
    echo = EchoServer((HOST, args.echo), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    threading.Thread(target=udp_echo, args=(args.echo,), daemon=True).start()
    web = Web((HOST, args.http), Page)
    log(f"listening on {HOST}:{args.http} (http), {HOST}:{args.echo} (tcp and udp echo)")
    try:
        web.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
