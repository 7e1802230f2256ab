"""
An ASGI app for rainbowd's soak harness (uvicorn, hypercorn): the same
answers as L{wsgiapp}.
"""

import asyncio
import os
from urllib.parse import parse_qs

with open("VERSION") as f:
    VERSION = f.read().strip()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/health":
        body = b"ok\n"
    else:
        query = parse_qs(scope.get("query_string", b"").decode())
        seconds = float(query.get("sleep", ["0"])[0])
        if seconds:
            await asyncio.sleep(seconds)
        body = f"{VERSION} pid={os.getpid()}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
