#!/usr/bin/env python3
"""Loads every page of the built book in headless Chromium and fails on what
a reader would see broken: a figure (an <img>) that does not load, a request
for a file of the book that fails, and an internal link to a page or an
anchor that does not exist.

    mdbook build book && scripts/check-book.py [book/book]

It serves the built book on 127.0.0.1 (a port the kernel picks) and drives
Chromium over its DevTools protocol on a pipe (--remote-debugging-pipe:
JSON messages ending in a NUL byte, commands on fd 3, replies on fd 4), with
nothing but the Python standard library. Links to other sites are not
followed: the check makes no connection beyond loopback.
"""

import functools
import http.server
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

PAGE_TIMEOUT = 20.0

# What the page reports once loaded: broken images, every link, every id.
INSPECT = """
(() => {
  const broken = [...document.images]
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.getAttribute('src'));
  const links = [...document.querySelectorAll('a[href]')]
    .map(a => [a.getAttribute('href'), a.href]);
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const names = [...document.querySelectorAll('a[name]')].map(e => e.name);
  return {broken, links, ids: ids.concat(names)};
})()
"""


class Browser:
    """Chromium with the DevTools protocol on two pipes."""

    def __init__(self, chromium):
        cmd_r, self.cmd_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="tunlab-book-check-")

        def wire_pipes():
            os.dup2(cmd_r, 3)
            os.dup2(resp_w, 4)

        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            pass_fds=(3, 4),
        )
        os.close(cmd_r)
        os.close(resp_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline):
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.resp_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe (did it start?)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=None, timeout=PAGE_TIMEOUT):
        """Sends a command and returns its result; events met on the way are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method, timeout=PAGE_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))


def serve(root):
    handler = functools.partial(QuietHandler, directory=root)
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietServer(http.server.ThreadingHTTPServer):
    """A navigation cancels the last page's requests: not worth a traceback."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "book/book")
    if not os.path.isfile(os.path.join(root, "index.html")):
        sys.exit(f"check-book: no built book in {root}; run: mdbook build book")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("check-book: chromium is missing; install it with: scripts/install-deps.sh --browser")

    pages = sorted(
        os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
        for d, _, files in os.walk(root)
        for f in files
        if f.endswith(".html") and f != "404.html"
    )
    server = serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    browser = Browser(chromium)
    problems = []
    ids = {}
    links = []  # (page, href as written, resolved URL)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        for page in pages:
            browser.events.clear()
            browser.send("Page.navigate", {"url": base + page}, session=session)
            browser.wait_event("Page.loadEventFired")
            result = browser.send(
                "Runtime.evaluate",
                {"expression": INSPECT, "returnByValue": True},
                session=session,
            )["result"]["value"]
            for src in result["broken"]:
                problems.append(f"{page}: image does not load: {src}")
            ids[page] = set(result["ids"])
            links.extend((page, written, resolved) for written, resolved in result["links"])
            failed = {e["params"]["requestId"] for e in browser.events if e.get("method") == "Network.loadingFailed"}
            for event in browser.events:
                params = event.get("params", {})
                if event.get("method") == "Network.responseReceived":
                    response = params["response"]
                    if response["url"].startswith(base) and response["status"] >= 400:
                        problems.append(f"{page}: {response['url'][len(base):]} answered {response['status']}")
                if event.get("method") == "Network.requestWillBeSent" and params.get("requestId") in failed:
                    url = params["request"]["url"]
                    if url.startswith(base):
                        problems.append(f"{page}: request failed: {url[len(base):]}")
    finally:
        browser.close()
        server.shutdown()

    for page, written, resolved in links:
        if not resolved.startswith(base):
            continue  # another site, mailto:, javascript:
        url = urllib.parse.urlsplit(resolved)
        path = posixpath.normpath(urllib.parse.unquote(url.path).lstrip("/")) if url.path.strip("/") else "index.html"
        if path.endswith("/") or os.path.isdir(os.path.join(root, path)):
            path = posixpath.join(path, "index.html")
        if not os.path.exists(os.path.join(root, path)):
            problems.append(f"{page}: link to a missing page: {written}")
        elif url.fragment and path in ids and urllib.parse.unquote(url.fragment) not in ids[path]:
            problems.append(f"{page}: link to a missing anchor: {written}")

    print(f"check-book: {len(pages)} pages, {len(links)} links checked in {os.path.basename(chromium)}")
    if problems:
        for p in sorted(set(problems)):
            print(f"  {p}")
        sys.exit(f"check-book: {len(set(problems))} problems")
    print("check-book: no broken figure, file or internal link")


if __name__ == "__main__":
    main()
