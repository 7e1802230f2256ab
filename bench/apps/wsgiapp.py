"""
A WSGI app for rainbowd's soak harness (gunicorn, waitress, twistd web).

It reads its version from the file C{VERSION} in its working directory once,
when it starts, as an app reads its code.  C{GET /} answers
C{"<version> pid=<pid>"}; C{?sleep=N} makes it wait N seconds first;
C{GET /health} answers C{ok}.
"""

import os
import time
from urllib.parse import parse_qs

with open("VERSION") as f:
    VERSION = f.read().strip()


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/health":
        body = b"ok\n"
    else:
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("sleep", ["0"])[0])
        if seconds:
            time.sleep(seconds)
        body = f"{VERSION} pid={os.getpid()}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
