"""Decoded cases kept in memory within a byte budget, for random access to a slice store.

:class:`~lungseg.store.slices.SliceStore` keeps one :class:`CaseCache`; it holds nothing of
zarr, so it can be tested and reasoned about on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

__all__ = ["CaseCache", "Pair"]

#: A case's ``(image float32 (n, H, W), mask uint8 (n, H, W))``.
Pair = tuple[np.ndarray, np.ndarray]


class CaseCache:
    """Whole decoded cases by id, least recently used first, at most ``budget`` bytes.

    Two admission rules serve the store's two read patterns:

    - :meth:`put` (whole-case reads) admits a case that fits the budget on its own and
      evicts the least recently used cases to make room;
    - :meth:`fits` (slice reads) says whether a case fits in what is left *without*
      evicting: under random access over a store larger than the budget, evicting would
      decode a whole case to serve each slice, while keeping the admitted cases serves
      ``budget / store`` of the reads from memory.

    Iterating yields the cached case ids, least recently used first.

    Args:
        budget: bytes of decoded cases to keep (0 keeps none).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._pairs: OrderedDict[str, Pair] = OrderedDict()
        self._bytes = 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._pairs

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def nbytes(self) -> int:
        """Bytes held now (at most ``budget``)."""
        return self._bytes

    def get(self, case_id: str, touch: bool = False) -> Pair | None:
        """The cached pair of ``case_id``, or ``None``.

        Args:
            case_id: the case.
            touch: mark it most recently used (whole-case reads do; slice reads do not).
        """
        pair = self._pairs.get(case_id)
        if pair is not None and touch:
            self._pairs.move_to_end(case_id)
        return pair

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit in what is left of the budget, evicting nothing."""
        return self._bytes + nbytes <= self.budget

    def put(self, case_id: str, pair: Pair) -> None:
        """Keep ``pair`` if it fits the budget on its own, evicting the oldest cases for it."""
        size = pair[0].nbytes + pair[1].nbytes
        if size > self.budget:
            return
        old = self._pairs.pop(case_id, None)
        if old is not None:
            self._bytes -= old[0].nbytes + old[1].nbytes
        self._pairs[case_id] = pair
        self._bytes += size
        while self._bytes > self.budget:
            _, dropped = self._pairs.popitem(last=False)
            self._bytes -= dropped[0].nbytes + dropped[1].nbytes
