"""Fixtures for the emulated-AWS tests; the helpers behind them are in tests/localcloud/support.py."""

from __future__ import annotations

import pytest

from tests.localcloud.support import StoppedClock, World


@pytest.fixture
def world(aws) -> World:
    """A clean emulated AWS with a VPC, a subnet and a launch template, and boto3 clients for it."""
    return World(aws)


@pytest.fixture
def stopped_clock(aws):
    """The emulated world on a stopped clock (one clock second = one AWS second) that only the test moves."""
    clock = StoppedClock(aws)
    yield clock
    aws.reset()  # the real clock and the session's time scale again, for whatever uses `cloud` next
