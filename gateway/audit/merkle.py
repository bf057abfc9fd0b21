"""RFC 9162 Merkle tree hashing, proofs from stored subtree hashes, and proof verification.

The tree is never rebuilt to answer a question. Every *complete* subtree — the 2^level
leaves ``[index * 2^level, (index + 1) * 2^level)``, named by the coordinate
``(level, index)`` — has its hash stored once (the "tiles" idea of C2SP tlog-tiles). Any
range that RFC 9162's recursion asks about (``MTH(D[k:n])``) starts at a multiple of a power
of two at least as large as the range, so it splits into at most log2(n) complete subtrees
whose hashes fold into it. Roots and proofs therefore read O(log n) stored hashes.

Generating a proof is two steps: a *plan* (pure arithmetic, which coordinates fold into each
proof element) and one batched read of those coordinates from a :class:`SubtreeReader`
(Redis in :mod:`gateway.audit.tiles`, a dict in :class:`MemorySubtrees`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from gateway.audit.errors import AuditError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}), RFC 9162 §2.1.1

Coord = tuple[int, int]  # (level, index) of a complete subtree
Plan = list[list[Coord]]  # one list of coordinates, folded, per proof element


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 §2.1.1); the 0x00 prefix separates leaves from nodes."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (RFC 9162 §2.1.1); n must be at least 2."""
    return 1 << ((n - 1).bit_length() - 1)


def range_coords(start: int, end: int) -> list[Coord]:
    """The complete subtrees that make up ``[start, end)``, left to right.

    Raises ``ValueError`` for a range that RFC 9162's recursion never produces (one whose start
    is not aligned to the subtrees it needs).
    """
    coords: list[Coord] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start & ((1 << level) - 1):
            raise ValueError(f"range [{start}, {end}) is not aligned")
        coords.append((level, start >> level))
        start += 1 << level
    return coords


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees (right to left, as the RFC's split does)."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def root_plan(size: int) -> list[Coord]:
    return range_coords(0, size)


def inclusion_plan(index: int, size: int) -> Plan:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf's sibling first, as coordinates."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    plan: Plan = []
    low, high, m = 0, size, index
    while high - low > 1:
        k = _largest_power_of_two_below(high - low)
        if m < k:
            plan.append(range_coords(low + k, high))
            high = low + k
        else:
            plan.append(range_coords(low, low + k))
            low, m = low + k, m - k
    plan.reverse()  # the recursion appends the top sibling first; proofs start at the leaf
    return plan


def consistency_plan(old_size: int, new_size: int) -> Plan:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1 as coordinates."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    plan: Plan = []
    low, high, m, whole = 0, new_size, old_size, True
    while m != high - low:
        k = _largest_power_of_two_below(high - low)
        if m <= k:
            plan.append(range_coords(low + k, high))
            high = low + k
        else:
            plan.append(range_coords(low, low + k))
            low, m, whole = low + k, m - k, False
    if not whole:
        plan.append(range_coords(low, high))  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
    plan.reverse()
    return plan


class SubtreeReader(Protocol):
    """Where complete-subtree hashes are read from. ``None`` marks a hash not (yet) stored."""

    def get_subtrees(self, coords: Sequence[Coord]) -> list[bytes | None]: ...


class MissingSubtree(AuditError):
    """A complete subtree's hash is not stored (the log is not sealed that far)."""


def materialize(plan: Plan, reader: SubtreeReader) -> list[bytes]:
    """Fetch every coordinate of ``plan`` in one batch and fold each proof element."""
    wanted = sorted({coord for element in plan for coord in element})
    found = dict(zip(wanted, reader.get_subtrees(wanted), strict=True))
    missing = [coord for coord, value in found.items() if value is None]
    if missing:
        raise MissingSubtree(f"subtree hashes not stored: {missing[:4]}")
    return [fold([found[coord] or b"" for coord in element]) for element in plan]


def root_at(size: int, reader: SubtreeReader) -> bytes:
    """MTH(D[0:size]) from at most log2(size) stored hashes."""
    return materialize([root_plan(size)], reader)[0] if size else EMPTY_ROOT


class MemorySubtrees:
    """Subtree hashes held in a dict: for offline verification and proofs from an export."""

    def __init__(self) -> None:
        self._nodes: dict[Coord, bytes] = {}

    def get_subtrees(self, coords: Sequence[Coord]) -> list[bytes | None]:
        return [self._nodes.get(coord) for coord in coords]

    def put_subtrees(self, nodes: Iterable[tuple[Coord, bytes]]) -> None:
        self._nodes.update(nodes)


class TreeBuilder:
    """Appends leaf hashes one by one, keeping only the right edge (the "compact range").

    ``push`` returns every complete subtree the new leaf finishes (the leaf itself at level 0,
    then each parent it completes), which is what gets stored. Resuming at ``size`` needs only
    the hashes of :func:`root_plan` (``size``), not the leaves.
    """

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if len(frontier) != len(root_plan(size)):
            raise ValueError("the frontier must hold one hash per complete subtree of the size")
        self.size = size
        self._stack: list[bytes] = list(frontier)

    def push(self, leaf: bytes) -> list[tuple[Coord, bytes]]:
        index = self.size
        finished: list[tuple[Coord, bytes]] = [((0, index), leaf)]
        self._stack.append(leaf)
        level, position = 0, index
        while position & 1:  # an odd position closes its parent
            right = self._stack.pop()
            left = self._stack.pop()
            level, position = level + 1, position >> 1
            parent = node_hash(left, right)
            self._stack.append(parent)
            finished.append(((level, position), parent))
        self.size += 1
        return finished

    def root(self) -> bytes:
        return fold(self._stack)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, plus the trivial cases the algorithm leaves out."""
    if not 0 <= first <= second or any(len(c) != HASH_SIZE for c in proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root
