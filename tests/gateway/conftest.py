from __future__ import annotations

from tests.support.staff import (  # noqa: F401  (fixtures)
    fast_password_hashing,
    plain_user,
    staff_user,
)
