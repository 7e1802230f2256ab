"""
Tests for L{rainbowd.app.ports}.
"""

from typing import Container, List

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app import ports
from rainbowd.app.ports import NoFreePort, PortPicker


class FakePortTable:
    """
    An C{isFree} policy: ports in C{busy} are in use, and every port asked
    about is recorded in C{asked}.
    """

    def __init__(self, busy: Container[int] = ()) -> None:
        self.busy = busy
        self.asked: List[int] = []

    def __call__(self, port: int) -> bool:
        self.asked.append(port)
        return port not in self.busy


class PortPickerTests(SynchronousTestCase):
    """
    Tests for L{PortPicker.pick}, with an injected C{isFree} and C{cursor}.
    """

    def test_rotation(self) -> None:
        """
        Successive picks hand out successive ports starting at the cursor,
        so a port just given up is not handed out again at once.
        """
        picker = PortPicker(isFree=FakePortTable(), cursor=20003)
        picks = [picker.pick((20000, 20009)) for _ in range(3)]
        self.assertEqual(picks, [20003, 20004, 20005])
        self.assertEqual(picker.cursor, 20006)

    def test_wrapAround(self) -> None:
        """
        After the top of the range the rotation continues at its bottom.
        """
        picker = PortPicker(isFree=FakePortTable(), cursor=20002)
        picks = [picker.pick((20000, 20002)) for _ in range(3)]
        self.assertEqual(picks, [20002, 20000, 20001])

    def test_skipsExcluded(self) -> None:
        """
        Ports in C{exclude} are skipped without asking whether they are free.
        """
        isFree = FakePortTable()
        picker = PortPicker(isFree=isFree, cursor=20000)
        self.assertEqual(picker.pick((20000, 20009), exclude={20000, 20001}), 20002)
        self.assertEqual(isFree.asked, [20002])

    def test_skipsBusy(self) -> None:
        """
        Ports that C{isFree} says are in use are skipped, wrapping around the
        range if need be, and the cursor moves past the port picked.
        """
        isFree = FakePortTable(busy={20003, 20004})
        picker = PortPicker(isFree=isFree, cursor=20003)
        self.assertEqual(picker.pick((20000, 20004)), 20000)
        self.assertEqual(isFree.asked, [20003, 20004, 20000])
        self.assertEqual(picker.cursor, 20001)

    def test_noFreePort(self) -> None:
        """
        When every port is busy or excluded, L{NoFreePort} is raised with a
        message naming the range, after each port was looked at only once.
        """
        isFree = FakePortTable(busy={20000, 20002})
        picker = PortPicker(isFree=isFree, cursor=20001)
        e = self.assertRaises(
            NoFreePort, picker.pick, (20000, 20002), exclude={20001}
        )
        self.assertIn("20000-20002", str(e))
        self.assertEqual(sorted(isFree.asked), [20000, 20002])

    def fakeRandint(self, choice: int) -> List[tuple]:
        """
        Make L{random.randint}, as L{rainbowd.app.ports} uses it, return
        C{choice}; return the list of the ranges it is asked for.
        """
        asked: List[tuple] = []

        def randint(low: int, high: int) -> int:
            asked.append((low, high))
            return choice

        self.patch(ports.random, "randint", randint)
        return asked

    def test_cursorOutsideRangeIsReset(self) -> None:
        """
        A cursor outside the range asked for (the range changed with a
        reload) is replaced by a random port of the range, where the
        rotation then starts.
        """
        asked = self.fakeRandint(20006)
        picker = PortPicker(isFree=FakePortTable(), cursor=8000)
        self.assertEqual(picker.pick((20000, 20009)), 20006)
        self.assertEqual(asked, [(20000, 20009)])
        self.assertEqual(picker.cursor, 20007)

    def test_noCursorStartsAtRandom(self) -> None:
        """
        Without a cursor the first pick starts at a random port of the
        range, and later picks rotate from there without drawing again.
        """
        asked = self.fakeRandint(20004)
        picker = PortPicker(isFree=FakePortTable())
        picks = [picker.pick((20000, 20009)) for _ in range(2)]
        self.assertEqual(picks, [20004, 20005])
        self.assertEqual(asked, [(20000, 20009)])

    def test_singlePortRange(self) -> None:
        """
        A range of one port hands out that port every time it is free.
        """
        picker = PortPicker(isFree=FakePortTable())
        self.assertEqual(
            [picker.pick((20000, 20000)) for _ in range(2)], [20000, 20000]
        )
