from __future__ import annotations

from tests.fakes.slack import fake_slack  # noqa: F401  (fixture)
