"""Stable 64-bit hashes of event ids, computed once per batch for every check that needs them.

Python's ``hash`` of a string differs between processes, so state that outlives a process (the
label join's store and sampling, the duplicate-id ring) keys ids by the first 8 bytes of their
BLAKE2b digest instead. A batch's ids are hashed once (:func:`event_hashes`) and the array is
shared by the duplicate check and the label join.

Examples
--------
>>> event_hash("e1") == event_hash("e1") != event_hash("1e")
True
>>> int(event_hashes(["a", "b"])[1]) == event_hash("b")
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

UIntArray = npt.NDArray[np.uint64]


def event_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id: its BLAKE2b-64 digest, read little-endian."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def event_hashes(event_ids: Sequence[str]) -> UIntArray:
    """:func:`event_hash` of every id, as one array: the digests joined and read as little-endian
    uint64 (no Python int per id)."""
    b2 = hashlib.blake2b
    digests = b"".join([b2(i.encode(), digest_size=8).digest() for i in event_ids])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


__all__ = ["UIntArray", "event_hash", "event_hashes"]
