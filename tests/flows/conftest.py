"""Flow tests run against one temporary Prefect server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(autouse=True, scope="session")
def prefect_harness() -> Iterator[None]:
    """A throwaway Prefect API and database for every flow test."""
    with prefect_test_harness(server_startup_timeout=120):
        yield
