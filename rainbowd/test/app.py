# -*- test-case-name: rainbowd.test.endtoend.test_endtoend -*-
"""
A tiny stdlib-only web app for rainbowd's end-to-end tests::

    python -m rainbowd.test.app PORT PIDFILE

It listens on 127.0.0.1:PORT, then writes its pid to PIDFILE.  Its
behaviour is set by environment variables::

    APP_VERSION=v2        what C{GET /} and C{GET /slow} answer (default v1)
    APP_FAIL_AT_START=1   print an error and exit 3 before listening
    APP_STARTUP_DELAY=N   sleep N seconds before listening
    APP_WAIT_FOR=PATH     then wait until PATH exists before listening
    APP_IGNORE_SIGTERM=1  ignore SIGTERM, so only SIGKILL stops it
    APP_DIE_OF_SIGTERM=1  once SIGTERM has stopped it, die of that signal
                          rather than exit 0, as twistd does (a shell that
                          runs it then exits 143)
    APP_FORK_CHILD=1      start a child process that outlives it
    APP_MISBEHAVE=1       speak HTTP/1.1 with keep-alive, and serve the
                          misbehaving paths below
    APP_ROOT_STATUS=500   a broken release: C{GET /} answers with this
                          status (C{/health} still answers 200)
    APP_CRASH_AFTER=N     a release that crashes: exit 1 N seconds after
                          listening

Endpoints: C{GET /} ("<version> pid=<pid>"), C{GET /health},
C{GET /slow?seconds=N}, which answers after N seconds, C{GET /big?bytes=N},
which answers N bytes of "x" with a I{Content-Length}, and C{GET /echo}
with C{Connection: Upgrade} and C{Upgrade: echo}, which answers 101, sends
"<version> pid=<pid>\n" and then echoes every byte it gets until the client
closes, C{GET /ws}, a WebSocket (RFC 6455) that echoes each message,
C{GET /events?gap=N}, a C{text/event-stream} that sends one event, waits
N seconds (default 1) and sends another, and C{GET /hang}, after which the
app hangs as if deadlocked: that request and every later one, C{/health}
included, wait forever, and SIGTERM no longer ends it.  On SIGTERM it stops listening, finishes the requests in flight
(echoes included) and exits 0.

With C{APP_MISBEHAVE=1}, C{GET /token?t=T} answers "token=T\n", and these
paths frame their responses wrongly, each sending L{STRAY} (a whole response
with a I{Set-Cookie}, answering "token=stolen") in a later write, before
reading the next request: C{HEAD /misframe/head} (as the body of a HEAD),
C{GET /misframe/204} and C{/misframe/304} (as the body of a 204 or 304),
C{GET /misframe/long?t=T} (past the I{Content-Length} of "token=T\n") and
C{GET /misframe/twice?t=T} (as a second response, 50 ms after
"token=T\n"); C{GET /stall} never answers (while the app answers others),
and returns when the client closes.
"""

import base64
import hashlib
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = os.environ.get("APP_VERSION", "v1")


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): one request per connection, so no idle
    # keep-alive connection holds up the drain on SIGTERM.

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        hangIfAsked(url.path)
        if MISBEHAVE and self.misbehave(url):
            return
        if url.path == "/":
            self.answer(ROOT_STATUS, f"{VERSION} pid={os.getpid()}\n")
        elif url.path == "/health":
            self.answer(200, "ok\n")
        elif url.path == "/echo" and self.headers.get("Upgrade") == "echo":
            self.echo()
        elif url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.webSocket()
        elif url.path == "/events":
            self.events(float(parse_qs(url.query).get("gap", ["1"])[0]))
        elif url.path == "/big":
            self.big(int(parse_qs(url.query).get("bytes", ["0"])[0]))
        elif url.path == "/slow":
            seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(seconds)
            self.answer(200, f"{VERSION} pid={os.getpid()} slept {seconds}\n")
        else:
            self.answer(404, "not found\n")

    def echo(self) -> None:
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
            + f"{VERSION} pid={os.getpid()}\n".encode("ascii")
        )
        self.wfile.flush()
        try:
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.wfile.write(data)
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def webSocket(self) -> None:
        key = self.headers["Sec-WebSocket-Key"].encode("ascii")
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self.rfile.read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self.rfile.read(8))
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(
                byte ^ mask[i % 4] for (i, byte) in enumerate(self.rfile.read(length))
            )
            self.wfile.write(webSocketFrame(opcode, payload))
            self.wfile.flush()
            if opcode == 8:  # close
                return

    def events(self, gap: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in ["first", "second"]:
            self.wfile.write(f"data: {event}\n\n".encode("ascii"))
            self.wfile.flush()
            if event == "first":
                time.sleep(gap)

    def big(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"x" * 65536
        while size > 0:
            self.wfile.write(chunk[:size])
            size -= len(chunk)

    def answer(self, code: int, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if not MISBEHAVE:
            print(f"app {VERSION}: {format % args}", flush=True)

    # APP_MISBEHAVE=1

    def do_HEAD(self) -> None:
        if MISBEHAVE and urlsplit(self.path).path == "/misframe/head":
            self.send_response(200)
            self.send_header("Content-Length", str(len(STRAY)))
            self.end_headers()
            self.stray(0.005)
        else:
            self.send_error(501)

    def misbehave(self, url) -> bool:
        """
        Serve C{url} if it is one of the misbehaving paths.
        """
        token = parse_qs(url.query).get("t", [""])[0]
        if url.path == "/token":
            self.answer(200, f"token={token}\n")
        elif url.path in ("/misframe/204", "/misframe/304"):
            self.send_response(int(url.path[-3:]))
            self.end_headers()
            self.stray(0.005)
        elif url.path == "/misframe/long":
            self.answer(200, f"token={token}\n")
            self.stray(0.005)
        elif url.path == "/misframe/twice":
            self.answer(200, f"token={token}\n")
            self.stray(0.05)
        elif url.path == "/stall":
            self.close_connection = True
            try:
                while True:
                    select.select([self.rfile], [], [])
                    if not self.rfile.read1(65536):
                        break
            except OSError:
                pass
        else:
            return False
        return True

    def stray(self, delay: float) -> None:
        """
        After C{delay} seconds, send L{STRAY}, no part of any response.
        """
        self.wfile.flush()
        time.sleep(delay)
        self.wfile.write(STRAY)
        self.wfile.flush()


MISBEHAVE = os.environ.get("APP_MISBEHAVE") == "1"

STRAY = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=stolen\r\n"
    b"Content-Length: 13\r\n\r\ntoken=stolen\n"
)

if MISBEHAVE:
    Handler.protocol_version = "HTTP/1.1"


# Broken releases (APP_ROOT_STATUS, APP_CRASH_AFTER): one whose pages fail
# while its health check passes, and one that crashes a while after it
# became healthy.
ROOT_STATUS = int(os.environ.get("APP_ROOT_STATUS", "200"))


def crashLater() -> None:
    seconds = os.environ.get("APP_CRASH_AFTER")
    if seconds is None:
        return

    def crash() -> None:
        print(f"app {VERSION}: crashing (APP_CRASH_AFTER)", flush=True)
        os._exit(1)

    timer = threading.Timer(float(seconds), crash)
    timer.daemon = True
    timer.start()


# GET /hang: from then on, every request waits forever, like an app whose
# threads are deadlocked; the server's close on SIGTERM waits for them, so
# only SIGKILL ends it.
HUNG = threading.Event()


def hangIfAsked(path: str) -> None:
    if path == "/hang":
        print(f"app {VERSION}: hanging from now on", flush=True)
        HUNG.set()
    if HUNG.is_set():
        threading.Event().wait()


WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def webSocketFrame(opcode: int, payload: bytes, mask: bytes = b"") -> bytes:
    """
    A final WebSocket frame, masked with C{mask} if given (as a client's
    must be).
    """
    length = len(payload)
    maskBit = 0x80 if mask else 0
    if length < 126:
        head = bytes([0x80 | opcode, maskBit | length])
    elif length < 65536:
        head = bytes([0x80 | opcode, maskBit | 126]) + struct.pack("!H", length)
    else:
        head = bytes([0x80 | opcode, maskBit | 127]) + struct.pack("!Q", length)
    if mask:
        payload = bytes(byte ^ mask[i % 4] for (i, byte) in enumerate(payload))
    return head + mask + payload


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


def writePidfile(path: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


# APP_DIE_OF_SIGTERM=1: end as twistd does after a SIGTERM, by that signal.
def dieOfSIGTERMIfAsked() -> None:
    if os.environ.get("APP_DIE_OF_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def main(port: int, pidfile: str) -> None:
    if os.environ.get("APP_FAIL_AT_START") == "1":
        print("app: cannot import settings (simulated broken build)",
              file=sys.stderr, flush=True)
        sys.exit(3)
    time.sleep(float(os.environ.get("APP_STARTUP_DELAY", "0")))
    gate = os.environ.get("APP_WAIT_FOR")
    while gate and not os.path.exists(gate):
        time.sleep(0.01)
    if os.environ.get("APP_FORK_CHILD") == "1":
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)"])
        print(f"app {VERSION}: started child pid={child.pid}", flush=True)

    server = Server(("127.0.0.1", port), Handler)
    writePidfile(pidfile)
    print(f"app {VERSION} listening on 127.0.0.1:{port} pid={os.getpid()}",
          flush=True)
    crashLater()

    def onSIGTERM(signum: int, frame: object) -> None:
        print(f"app {VERSION}: SIGTERM, finishing requests in flight",
              flush=True)
        # shutdown() waits for serve_forever() to return, and this handler
        # runs inside serve_forever(), so call it from another thread.
        threading.Thread(target=server.shutdown).start()

    if os.environ.get("APP_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, onSIGTERM)

    server.serve_forever()
    server.server_close()  # joins the request threads: block_on_close
    print(f"app {VERSION} pid={os.getpid()} stopped", flush=True)
    dieOfSIGTERMIfAsked()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
