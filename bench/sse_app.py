"""
A tiny server-sent events app for bench/proxy.py, run as rainbowd's app:

    python3 sse_app.py PORT PIDFILE

C{GET /events} answers a chunked C{text/event-stream} with one event at
once and then one a second until the client leaves; any other path
answers 200 C{ok} (the health check).
"""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path != "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for number in range(3600):
                event = f"data: {number}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(port: str, pidfile: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
