"""The end-to-end lab's own guarantees, checked without creating a namespace."""

from __future__ import annotations

import pytest

from tests.e2e import harness


class HalfStarting:
    """A server whose start makes something (a bridge, say), then fails."""

    def __init__(self, stop_fails: bool = False) -> None:
        self.made: list[str] = []
        self.stop_fails = stop_fails

    def start(self) -> None:
        self.made.append("exc-br0")
        raise harness.HarnessError("ip netns add exc-c2: failed")

    def stop(self) -> None:
        self.made.clear()
        if self.stop_fails:
            raise harness.HarnessError("could not remove bridge exc-br0")


def test_a_start_that_fails_partway_is_torn_down_and_its_error_raised() -> None:
    server = HalfStarting()
    with pytest.raises(harness.HarnessError, match="ip netns add"), harness.started(server):
        pytest.fail("the body runs only after a start that succeeded")
    assert server.made == []


def test_a_failing_teardown_after_a_failed_start_keeps_the_start_error() -> None:
    server = HalfStarting(stop_fails=True)
    with pytest.raises(harness.HarnessError, match="ip netns add") as raised, harness.started(server):
        pytest.fail("the body runs only after a start that succeeded")
    assert any("could not remove bridge" in note for note in raised.value.__notes__)
