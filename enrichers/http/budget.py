"""The run's billable-unit budget for one provider."""

from __future__ import annotations


class Budget:
    """Units spent so far against an optional limit; reservations happen before a request.

    Units are counted when reserved and never given back: a request that failed may still
    have been billed (a timeout the server finished), and a budget must never be overspent.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("budget limit must be >= 0")
        self.limit = limit
        self.used = 0

    @property
    def remaining(self) -> int | None:
        """Units left (None: unlimited)."""
        return None if self.limit is None else max(0, self.limit - self.used)

    def can_reserve(self, units: int) -> bool:
        """Whether a request costing `units` may be sent.

        A zero-cost request (billed per match, charged afterwards) still needs one unit of
        room: with nothing left, any match it finds could not be paid for.
        """
        return self.limit is None or self.used + max(units, 1) <= self.limit

    def reserve(self, units: int) -> bool:
        """Count `units` as spent if they fit; False (and nothing counted) if not."""
        if not self.can_reserve(units):
            return False
        self.used += units
        return True

    def charge(self, units: int) -> bool:
        """Count `units` already spent (matches found); False if that went over the limit.

        The units are counted either way: the provider has billed them.
        """
        self.used += units
        return self.limit is None or self.used <= self.limit
