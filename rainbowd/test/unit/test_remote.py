# -*- test-case-name: rainbowd.test.unit.test_remote -*-
"""
Tests for L{rainbowd.control.remote} and C{rainbowctl --control}: a rainbowd on
another host.
"""

import io
import os
from typing import List

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.control.client import Connection
from rainbowd.control.ctl import CANNOT, run
from rainbowd.control.remote import (
    RemoteAddress,
    RemoteError,
    clearTextWarning,
    readTokenFile,
    remoteAddress,
)
from rainbowd.fdlimit import FileLimit
from rainbowd.tap import Options, makeService
from rainbowd.test.fakes import FakeProcessReactor
from rainbowd.test.unit.test_controlsite import tokenFile
from rainbowd.test.unit.test_ctl import SUCCESS, FakeConnection, FakeResponse
from rainbowd.test.unit.test_tap import RUN


class RemoteAddressTests(SynchronousTestCase):
    """
    Tests for L{remoteAddress}.
    """

    def test_tcp(self) -> None:
        """
        C{tcp:HOST:PORT}, positional or by name, is plain HTTP to there.
        """
        self.assertEqual(remoteAddress("tcp:web1:7001"), RemoteAddress("web1", 7001))
        self.assertEqual(
            remoteAddress("tcp:host=10.0.0.5:port=7001"), RemoteAddress("10.0.0.5", 7001)
        )
        self.assertEqual(str(remoteAddress("tcp:web1:7001")), "tcp:web1:7001")

    def test_ipv6(self) -> None:
        """
        An IPv6 address, its colons escaped or in brackets, is one host.
        """
        self.assertEqual(remoteAddress(r"tcp:\:\:1:7001"), RemoteAddress("::1", 7001))
        self.assertEqual(remoteAddress(r"tcp:[fd00\:\:5]:7001").host, "fd00::5")

    def test_ssl(self) -> None:
        """
        C{ssl:HOST:PORT} is HTTPS, with C{cafile=} if given.
        """
        self.assertEqual(
            remoteAddress("ssl:web1:7443:cafile=/etc/ca.pem"),
            RemoteAddress("web1", 7443, tls=True, cafile="/etc/ca.pem"),
        )
        self.assertEqual(remoteAddress("ssl:web1:7443").connect(5.0).host, "web1:7443")
        self.assertEqual(remoteAddress("ssl:web1:443").connect(5.0).host, "web1")

    def test_bad(self) -> None:
        """
        Anything else is refused with the forms that work.
        """
        for description in ["web1:7001", "tcp:web1", "tcp:web1:http", "unix:/x", "tcp::7001"]:
            error = self.assertRaises(RemoteError, remoteAddress, description)
            self.assertIn("give tcp:HOST:PORT", str(error))

    def test_nonASCIIHost(self) -> None:
        """
        A host name that is not ASCII is sent in its IDNA form; one that
        has none is refused, saying what to give instead.
        """
        address = remoteAddress("tcp:bücher.example:7001")
        self.assertEqual(address.connect(5.0).host, "xn--bcher-kva.example:7001")
        error = self.assertRaises(RemoteError, remoteAddress, "tcp:" + "ü" * 70 + ".x:7001")
        self.assertIn("has no ASCII (IDNA) form", str(error))
        self.assertIn("give its address, or its name as xn--", str(error))
        for host, problem in [
            (r"例\:x", "has colons but is not an IPv6 address"),
            (r"fe80\:\:1%ü", "has an IPv6 zone that is not ASCII"),
        ]:
            error = self.assertRaises(RemoteError, remoteAddress, f"tcp:{host}:7001")
            self.assertIn(problem, str(error))
        self.assertEqual(remoteAddress(r"tcp:fe80\:\:1%lo:7001").connect(5.0).host, "[fe80::1]:7001")


class ClearTextWarningTests(SynchronousTestCase):
    """
    Tests for L{clearTextWarning}.
    """

    def test_clearText(self) -> None:
        """
        Plain TCP to another host warns that the token crosses in clear
        text, and shows the ssh tunnel to use instead.
        """
        warning = clearTextWarning(RemoteAddress("web1", 7001), b"t")
        self.assertIn("the control token crosses the network in clear text", warning)
        self.assertIn(
            "ssh -N -L 7001:127.0.0.1:7001 web1 & then rainbowctl --control "
            "tcp:127.0.0.1:7001",
            warning,
        )

    def test_noToken(self) -> None:
        """
        Without a token, the warning says anyone reaching the port can
        redeploy.
        """
        warning = clearTextWarning(RemoteAddress("10.0.0.5", 7001), None)
        self.assertIn("anyone who reaches that port can redeploy", warning)

    def test_safe(self) -> None:
        """
        TLS, and loopback addresses (an ssh tunnel), are not warned about.
        """
        for address in [
            RemoteAddress("web1", 7001, tls=True),
            RemoteAddress("127.0.0.1", 7001),
            RemoteAddress("::1", 7001),
            RemoteAddress("localhost", 7001),
        ]:
            self.assertIsNone(clearTextWarning(address, b"t"), address)


class RainbowctlControlTests(SynchronousTestCase):
    """
    Tests for C{rainbowctl --control} as a whole, with fake connections.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()
        self.token = self.directory.child("token")
        self.token.setContent(b"s3cret\n")
        os.chmod(self.token.path, 0o600)

    def rainbowctl(self, argv: List[str], connection):
        out, err = io.StringIO(), io.StringIO()
        code = run(argv, out, err, self.directory.path, connection)
        return code, out.getvalue(), err.getvalue()

    def ndjson(self) -> FakeResponse:
        import json

        body = b"".join(json.dumps(event).encode() + b"\n" for event in SUCCESS)
        return FakeResponse(200, body, "application/x-ndjson")

    def test_redeploy(self) -> None:
        """
        With --control and --token-file, no config is needed: the token
        is sent, and the clear-text warning goes to stderr.
        """
        connection = FakeConnection(self.ndjson())
        code, out, err = self.rainbowctl(
            ["--control", "tcp:10.0.0.5:7001", "--token-file", self.token.path, "redeploy"],
            connection,
        )
        self.assertEqual(code, 0)
        self.assertIn("deployed generation 3", out)
        self.assertIn("rainbowctl: warning: the control token crosses", err)
        self.assertEqual(connection.requests[0][3]["Authorization"], "Bearer s3cret")

    def test_tunnel(self) -> None:
        """
        Through a tunnel (a loopback address), there is nothing to warn of.
        """
        code, out, err = self.rainbowctl(
            ["--control", "tcp:127.0.0.1:7001", "--token-file", self.token.path, "redeploy"],
            FakeConnection(self.ndjson()),
        )
        self.assertEqual((code, err), (0, ""))

    def test_badTokenFile(self) -> None:
        """
        A missing token file is named, as --token-file.
        """
        missing = self.directory.child("missing").path
        code, out, err = self.rainbowctl(
            ["--control", "tcp:127.0.0.1:7001", "--token-file", missing, "status"],
            FakeConnection(),
        )
        self.assertEqual(code, CANNOT)
        self.assertIn(f"The control token file {missing} (--token-file)", err)
        self.assertRaises(RemoteError, readTokenFile, missing)

    def test_badCAFile(self) -> None:
        """
        An ssl: endpoint whose cafile is missing, or holds no certificate,
        is named as the CA file, before any connection is tried.
        """
        notPEM = self.directory.child("ca.pem")
        notPEM.setContent(b"not a certificate\n")
        for path in [self.directory.child("missing.pem").path, notPEM.path]:
            connection = FakeConnection()
            code, _, err = self.rainbowctl(
                ["--control", f"ssl:10.0.0.5:7443:cafile={path}", "status"],
                connection,
            )
            self.assertEqual(code, CANNOT)
            self.assertIn(f"the CA file {path} (cafile= of --control)", err)
            self.assertEqual(connection.requests, [])

    def test_noToken(self) -> None:
        """
        A 401 without --token-file says to pass one.
        """
        code, _, err = self.rainbowctl(
            ["--control", "tcp:127.0.0.1:7001", "status"],
            FakeConnection(FakeResponse(401, b"{}")),
        )
        self.assertEqual(code, CANNOT)
        self.assertIn("rainbowd asks for a token (401): pass --token-file", err)

    def test_exclusive(self) -> None:
        """
        --control with --config, or --token-file without --control, is a
        mistake rainbowctl names.
        """
        code, _, err = self.rainbowctl(
            ["--control", "tcp:a:1", "--config", "x.json", "status"], FakeConnection()
        )
        self.assertEqual(code, CANNOT)
        self.assertIn("Give --control or --config, not both", err)
        code, _, err = self.rainbowctl(["--token-file", "t", "status"], FakeConnection())
        self.assertEqual(code, CANNOT)
        self.assertIn("--token-file goes with --control", err)


class _Recorder:
    """
    A socket that keeps what rainbowctl sends, and closes at once.
    """

    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _bytesSent(host: str, port: int) -> bytes:
    """
    The bytes rainbowctl's connection for C{tcp:HOST:PORT} sends for GET
    /status, with the I{Host} header its connection makes.
    """
    recorder = _Recorder()
    host = remoteAddress(f"tcp:{host}:{port}").connect(5.0).host
    Connection(lambda: recorder, host).request(
        "GET", "/status", headers={"Authorization": "Bearer s3cret-token"}
    )
    return recorder.sent


class RemoteHostHeaderTests(SynchronousTestCase):
    """
    The I{Host} header a remote rainbowctl sends, against the remote
    rainbowd's browser checks (L{rainbowd.control.browsers}).
    """

    def answer(self, sent: bytes, *argv: str) -> bytes:
        """
        What a rainbowd listening on all addresses, with a token, answers
        C{sent} arriving at 10.0.0.5 from another host.
        """
        stateDir = os.path.abspath(self.mktemp())
        options = Options()
        options.cwd = os.path.dirname(stateDir)
        # Any arguments, as the real one takes (all of them defaulted).
        options.raiseFileLimit = lambda *_: FileLimit(1024, 524288, 1024)
        options.parseOptions(
            ["--run", RUN, "--state-dir", stateDir]
            + ["--control-port", "tcp:7001:interface=0.0.0.0"]
            + ["--control-token-file", tokenFile(self, b"s3cret-token\n"), *argv]
        )
        options.warnings = []  # listening beyond loopback: said at startup
        service = makeService(options, FakeProcessReactor())
        [site] = [
            child.factory.wrappedFactory
            for child in service
            if getattr(child, "_key", None) == "controlPort"
        ]
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.5", 7001),
            peerAddress=IPv4Address("TCP", "10.0.0.9", 50000),
        )
        channel = site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(sent)
        return transport.value()

    def test_address(self) -> None:
        """
        C{--control tcp:ADDRESS:PORT} names the address the connection
        arrives at, which rainbowd lets in with no more config.
        """
        answer = self.answer(_bytesSent("10.0.0.5", 7001))
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:300])

    def test_name(self) -> None:
        """
        A host name is refused (403) with the key to set, and let in once
        that rainbowd lists it in C{controlAllowedHosts}.
        """
        sent = _bytesSent("web1.internal", 7001)
        refused = self.answer(sent)
        self.assertTrue(refused.startswith(b"HTTP/1.1 403 "), refused[:300])
        self.assertIn(b'\\"controlAllowedHosts\\": [\\"web1.internal\\"]', refused)
        allowed = self.answer(sent, "--control-allowed-hosts", "web1.internal")
        self.assertTrue(allowed.startswith(b"HTTP/1.1 200 "), allowed[:300])

    def test_refusalShown(self) -> None:
        """
        rainbowctl prints that refusal's sentence, which names the fix.
        """
        refused = self.answer(_bytesSent("web1.internal", 7001))
        body = refused.partition(b"\r\n\r\n")[2]
        out, err = io.StringIO(), io.StringIO()
        code = run(
            ["--control", "tcp:web1.internal:7001", "status"],
            out,
            err,
            None,
            FakeConnection(FakeResponse(403, body)),
        )
        self.assertEqual(code, CANNOT)
        self.assertIn('"controlAllowedHosts": ["web1.internal"]', err.getvalue())
