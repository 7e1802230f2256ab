"""
The example app: a page showing its version and its pid.

Served by C{twistd web --resource-script app.rpy}.  The version is read
from the VERSION file next to this one once, when the first request (rainbowd's
health check) arrives, so editing VERSION changes nothing until the next
redeploy starts a new process.
"""

import os

from twisted.web.resource import Resource

cache()  # Run this file once per process, not once per request.

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")) as f:
    VERSION = f.read().strip()


class Page(Resource):
    """
    The same page at every path.
    """

    def getChild(self, path, request):
        return self

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"example app {VERSION} pid={os.getpid()}\n".encode("utf-8")


resource = Page()
