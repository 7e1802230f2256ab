# -*- test-case-name: rainbowd.test.unit.test_browsers -*-
"""
Tests for L{rainbowd.control.browsers}: which requests are taken for a web page's,
and which host names the control API answers to.
"""

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.control.browsers import (
    BrowserGuard,
    hostOfHeader,
    normalHost,
    normalOrigin,
)

LOCAL = "127.0.0.1"


class NormalTests(SynchronousTestCase):
    """
    Tests for L{normalOrigin}, L{normalHost} and L{hostOfHeader}.
    """

    def test_origins(self) -> None:
        """
        Origins are lower-cased and lose their scheme's default port;
        anything with a path, a user, no scheme or a bad port is not one.
        """
        for given, expected in [
            ("https://ops.example.com", "https://ops.example.com"),
            ("HTTPS://Ops.Example.COM:443", "https://ops.example.com"),
            ("http://ops.example.com:80", "http://ops.example.com"),
            ("http://ops.example.com:8080", "http://ops.example.com:8080"),
            ("https://ops.example.com:080", "https://ops.example.com:80"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("null", "null"),
            ("https://ops.example.com/", None),
            ("https://ops.example.com/dash", None),
            ("https://user@ops.example.com", None),
            ("ops.example.com", None),
            ("https://ops.example.com:99999", None),
            ("https://[nonsense]", None),
            ("NULL", None),
            ("*", None),
            ("", None),
        ]:
            self.assertEqual(normalOrigin(given), expected, given)

    def test_hosts(self) -> None:
        """
        Host names are lower-cased and lose a trailing dot; addresses are
        written short; anything with a port or odd characters is not one.
        """
        for given, expected in [
            ("rainbowd.internal", "rainbowd.internal"),
            ("Rainbowd.Internal.", "rainbowd.internal"),
            ("10.0.0.5", "10.0.0.5"),
            ("[0:0::1]", "::1"),
            ("::1", "::1"),
            ("rainbowd.internal:7001", None),
            ("evil/x", None),
            ("a..b", None),
            ("-a", None),
            ("", None),
        ]:
            self.assertEqual(normalHost(given), expected, given)

    def test_hostHeaders(self) -> None:
        """
        A C{Host} header names its host with or without a port, an IPv6
        address only in brackets; a port that is not a number makes it
        malformed.
        """
        for given, expected in [
            ("localhost", "localhost"),
            ("LOCALHOST.:7001", "localhost"),
            ("127.0.0.1:7001", "127.0.0.1"),
            ("127.4.5.6", "127.4.5.6"),
            ("[::1]:7001", "::1"),
            ("[::1]", "::1"),
            (" example.com:80 ", "example.com"),
            ("::1", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[127.0.0.1]", None),
            ("localhost:", None),
            ("localhost:70a1", None),
            ("localhost:7001:7001", None),
        ]:
            self.assertEqual(hostOfHeader(given), expected, given)


class RefusalTests(SynchronousTestCase):
    """
    Tests for L{BrowserGuard.refusal}.
    """

    def refusal(
        self,
        origin=None,
        fetchSite=None,
        hosts=(b"localhost:7001",),
        local=LOCAL,
        guard=BrowserGuard(),
    ):
        return guard.refusal(origin, fetchSite, list(hosts), local)

    def test_curl(self) -> None:
        """
        What curl, rainbowctl and Prometheus send -- a loopback Host, no
        Origin, no Sec-Fetch-Site -- goes through.
        """
        for host in [b"localhost:7001", b"127.0.0.1:7001", b"[::1]:7001", b"localhost"]:
            self.assertIsNone(self.refusal(hosts=[host]), host)

    def test_origin(self) -> None:
        """
        Any C{Origin} header is refused, naming the header, the value and
        the key that would let it in.
        """
        for origin in [
            b"http://evil.example",
            b"http://localhost:7001",
            b"http://127.0.0.1:7001",
            b"null",
            b"",
            b"garbage",
        ]:
            refusal = self.refusal(origin=origin)
            self.assertEqual(refusal.header, "Origin", origin)
            self.assertEqual(refusal.value, origin.decode())
            self.assertEqual(refusal.key, "controlAllowedOrigins")
            self.assertIn(f'"Origin: {origin.decode()}"', refusal.error)
        self.assertIn(
            '"controlAllowedOrigins": ["http://evil.example"]',
            self.refusal(origin=b"http://evil.example").error,
        )
        self.assertIn('"null" is only let in if', self.refusal(origin=b"null").error)

    def test_listedOrigin(self) -> None:
        """
        An origin listed goes through, whatever C{Sec-Fetch-Site} says;
        one differing in scheme or port, or C{null}, does not.
        """
        guard = BrowserGuard(allowedOrigins=("https://ops.example.com",))
        for fetchSite in [None, b"cross-site", b"same-site"]:
            self.assertIsNone(
                self.refusal(b"https://ops.example.com", fetchSite, guard=guard)
            )
        self.assertIsNone(self.refusal(b"https://ops.example.com:443", guard=guard))
        for origin in [
            b"http://ops.example.com",
            b"https://ops.example.com:8443",
            b"https://ops.example.com.evil.example",
            b"null",
        ]:
            self.assertIsNotNone(self.refusal(origin, guard=guard), origin)

    def test_listedNull(self) -> None:
        """
        C{null} goes through only when listed literally.
        """
        guard = BrowserGuard(allowedOrigins=("null",))
        self.assertIsNone(self.refusal(b"null", guard=guard))
        self.assertIsNotNone(self.refusal(b"http://evil.example", guard=guard))

    def test_fetchSite(self) -> None:
        """
        Without C{Origin}, C{Sec-Fetch-Site: none} (an address typed in)
        goes through; same-origin, same-site and cross-site are a page's,
        and refused.
        """
        self.assertIsNone(self.refusal(fetchSite=b"none"))
        self.assertIsNone(self.refusal(fetchSite=b"None"))
        for fetchSite in [b"same-origin", b"same-site", b"cross-site", b"x"]:
            refusal = self.refusal(fetchSite=fetchSite)
            self.assertEqual(refusal.header, "Sec-Fetch-Site")
            self.assertEqual(refusal.value, fetchSite.decode())
            self.assertEqual(refusal.key, "controlAllowedOrigins")
            self.assertIn(f'"Sec-Fetch-Site: {fetchSite.decode()}"', refusal.error)

    def test_host(self) -> None:
        """
        A C{Host} naming a loopback address, localhost or the address the
        connection arrived at goes through; any other name, or a malformed
        value, is refused naming it and C{controlAllowedHosts}.
        """
        for host in [b"127.0.0.1", b"127.1.2.3:7001", b"LocalHost.:7001", b"[::1]"]:
            self.assertIsNone(self.refusal(hosts=[host]), host)
        self.assertIsNone(self.refusal(hosts=[b"10.0.0.5:7001"], local="10.0.0.5"))
        self.assertIsNone(
            self.refusal(hosts=[b"10.0.0.5:7001"], local="::ffff:10.0.0.5")
        )
        self.assertIsNone(self.refusal(hosts=[b"[fe80::1]:7001"], local="fe80::1%eth0"))
        for host in [
            b"attacker.example:7001",
            b"localhost.attacker.example",
            b"127.0.0.1.attacker.example",
            b"10.0.0.6:7001",
            b"2130706433",
            b"::1",
            b"localhost:x",
        ]:
            refusal = self.refusal(hosts=[host], local="10.0.0.5")
            self.assertEqual(refusal.header, "Host", host)
            self.assertEqual(refusal.value, host.decode())
            self.assertEqual(refusal.key, "controlAllowedHosts")
            self.assertIn(f'"Host: {host.decode()}"', refusal.error)
        self.assertIn(
            '"controlAllowedHosts": ["attacker.example"]',
            self.refusal(hosts=[b"Attacker.Example.:7001"]).error,
        )

    def test_listedHost(self) -> None:
        """
        A name listed in C{controlAllowedHosts} goes through, with or
        without a port, in any case, with a trailing dot.
        """
        guard = BrowserGuard(allowedHosts=("rainbowd.internal",))
        for host in [b"rainbowd.internal", b"RAINBOWD.internal.:7001"]:
            self.assertIsNone(self.refusal(hosts=[host], guard=guard), host)
        self.assertIsNotNone(self.refusal(hosts=[b"other.internal"], guard=guard))

    def test_noHost(self) -> None:
        """
        A request without C{Host}, or with an empty one, which no browser
        sends, goes through; two C{Host} headers are refused.
        """
        self.assertIsNone(self.refusal(hosts=[]))
        self.assertIsNone(self.refusal(hosts=[b""]))
        refusal = self.refusal(hosts=[b"localhost", b"attacker.example"])
        self.assertEqual(refusal.header, "Host")
        self.assertIn("more than one Host", refusal.error)

    def test_unixSocket(self) -> None:
        """
        Over a unix socket any C{Host} goes, but a page's C{Origin} or
        C{Sec-Fetch-Site} is still refused.
        """
        for host in [b"attacker.example", b"localhost", b"::1"]:
            self.assertIsNone(self.refusal(hosts=[host], local=None), host)
        self.assertIsNone(self.refusal(hosts=[b"a", b"b"], local=None))
        self.assertEqual(
            self.refusal(origin=b"http://evil.example", local=None).header, "Origin"
        )
        self.assertEqual(
            self.refusal(fetchSite=b"cross-site", local=None).header, "Sec-Fetch-Site"
        )

    def test_originBeforeHost(self) -> None:
        """
        A request failing both checks is refused for its C{Origin}.
        """
        refusal = self.refusal(origin=b"http://evil.example", hosts=[b"evil.example"])
        self.assertEqual(refusal.header, "Origin")
