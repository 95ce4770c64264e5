"""Every pruning test runs on one torch thread."""

from tests.helpers_pruning import one_thread  # noqa: F401 - an autouse fixture
