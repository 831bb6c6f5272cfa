"""The end-to-end lab's own guarantees, checked without creating a namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import harness
from tests.support import debian_root


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


def test_two_roots_of_one_suite_are_cached_apart_and_a_stamp_names_the_downloads(tmp_path: Path) -> None:
    """The pop3d root is Debian 12 like the package tests' root: each keeps its own
    directory, so neither rebuilds the other's; a root's stamp changes with the
    packages it only downloads, so a root built without them is rebuilt."""
    pop3d, packaging = debian_root.BOOKWORM_POP3D, debian_root.BOOKWORM
    assert pop3d.suite == packaging.suite and pop3d.cache_name != packaging.cache_name
    for spec in (pop3d, packaging):
        (tmp_path / spec.cache_name).mkdir()
        (tmp_path / spec.cache_name / debian_root.COMPLETE).write_text(spec.stamp)
        # Complete: returned as it is, nothing built (debootstrap would fail here).
        assert debian_root.cached_root(spec, tmp_path) == tmp_path / spec.cache_name
    without = debian_root.RootSpec(pop3d.suite, pop3d.packages, name=pop3d.name)
    assert "popa3d" in pop3d.stamp and without.stamp != pop3d.stamp
