"""Helpers shared by the log tests (``import log_kit``; see conftest.py)."""

from __future__ import annotations

from collections import Counter

from sigstack.log import MemoryStorage


class CountingStorage(MemoryStorage):
    """In-memory storage that counts the reads of each object."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def get(self, key: str) -> bytes | None:
        self.reads[key] += 1
        return super().get(key)
