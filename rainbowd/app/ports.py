# -*- test-case-name: rainbowd.test.unit.test_ports,rainbowd.test.endtoend.test_ports -*-
"""
Choosing the port a new backend listens on.

Binding to port 0 would hand out a port from the kernel's ephemeral range,
where any outgoing connection -- rainbowd's own connections to its backends
included -- can take it before the app binds it.  So ports come from a
configured range outside it, skipping those in use, and a launch that still
loses its port is retried on another (see L{rainbowd.app.deployer}).
"""

import random
import socket
from typing import Callable, Container, Optional, Tuple

import attrs


class NoFreePort(Exception):
    """
    Every port in the configured range is in use.
    """


def isPortFree(port: int, host: str = "127.0.0.1") -> bool:
    """
    Can an app listen on C{host:port} right now?  Asks the way app servers
    bind: with C{SO_REUSEADDR}, so a port in TIME_WAIT counts as free.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)
    except OSError:
        return False
    finally:
        probe.close()
    return True


@attrs.define
class PortPicker:
    """
    Hands out ports from a range in rotation, so a new generation does not
    take the port its predecessor has just let go of.

    @ivar isFree: the policy that says whether a port can be used.
    @ivar cursor: the next port to try; a random one in the range if
        L{None}, so that two rainbowd instances rarely race for one port.
    """

    isFree: Callable[[int], bool] = isPortFree
    cursor: Optional[int] = None

    def pick(self, portRange: Tuple[int, int], exclude: Container[int] = ()) -> int:
        """
        The next free port in C{portRange} (inclusive) not in C{exclude}.

        @raise NoFreePort: if there is none.
        """
        low, high = portRange
        size = high - low + 1
        if self.cursor is None or not low <= self.cursor <= high:
            self.cursor = random.randint(low, high)
        for offset in range(size):
            port = low + (self.cursor - low + offset) % size
            if port not in exclude and self.isFree(port):
                self.cursor = low + (port - low + 1) % size
                return port
        raise NoFreePort(
            f"every port in backendPorts {low}-{high} is in use; "
            f"widen the range or free some ports"
        )
