"""Korea Standard Time, the exchange's clock: UTC+9 all year (Korea keeps no DST).

The one definition of KST. `KST_OFFSET` and `KST_OFFSET_S` are the same offset for datetime
arithmetic and for integer epoch-second bucket arithmetic.
"""

from __future__ import annotations

from datetime import timedelta, timezone

KST_OFFSET = timedelta(hours=9)
KST = timezone(KST_OFFSET, "KST")
KST_OFFSET_S = int(KST_OFFSET.total_seconds())

__all__ = ["KST", "KST_OFFSET", "KST_OFFSET_S"]
