"""Merkle hashing and proofs, checked against an implementation written here from RFC 9162's
text alone (the recursive definitions of §2.1.1, §2.1.3.1 and §2.1.4.1), never against our own
module checking itself."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.merkle import (
    EMPTY_ROOT,
    MemorySubtrees,
    MissingSubtree,
    TreeBuilder,
    consistency_plan,
    inclusion_plan,
    materialize,
    range_coords,
    root_at,
    verify_consistency,
    verify_inclusion,
)

# -- the reference: RFC 9162 §2.1, transcribed ------------------------------------------------


def ref_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_k(n: int) -> int:
    """The largest power of two smaller than n (k < n <= 2k)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return ref_hash(b"")
    if n == 1:
        return ref_hash(b"\x00" + d[0])
    k = ref_k(n)
    return ref_hash(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# -- helpers ------------------------------------------------------------------------------------


def data_items(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def build(n: int) -> tuple[MemorySubtrees, list[bytes]]:
    """Our tree over data_items(n), stored in memory as complete-subtree hashes."""
    store, builder, leaves = MemorySubtrees(), TreeBuilder(), []
    for item in data_items(n):
        leaf = ref_hash(b"\x00" + item)
        leaves.append(leaf)
        store.put_subtrees(builder.push(leaf))
    return store, leaves


def flip(data: bytes, bit: int) -> bytes:
    as_list = bytearray(data)
    as_list[bit // 8] ^= 1 << (bit % 8)
    return bytes(as_list)


sizes = st.integers(min_value=1, max_value=300)


# -- roots and proofs agree with the reference ----------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == ref_mth([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@settings(max_examples=150, deadline=None)
@given(n=sizes)
def test_root_from_stored_subtrees_equals_the_rfc_recursion(n: int) -> None:
    store, _ = build(n)
    assert root_at(n, store) == ref_mth(data_items(n))


@settings(max_examples=150, deadline=None)
@given(n=sizes, data=st.data())
def test_inclusion_proof_equals_the_rfc_path(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    store, _ = build(n)
    assert materialize(inclusion_plan(m, n), store) == ref_path(m, data_items(n))


@settings(max_examples=150, deadline=None)
@given(n=sizes, data=st.data())
def test_consistency_proof_equals_the_rfc_proof(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n))
    store, _ = build(n)
    assert materialize(consistency_plan(m, n), store) == ref_proof(m, data_items(n))


@settings(max_examples=100, deadline=None)
@given(n=sizes, data=st.data())
def test_root_of_a_smaller_size_needs_no_rebuilding(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n))
    store, _ = build(n)  # the tree at size n still answers for any earlier size
    assert root_at(m, store) == ref_mth(data_items(m))


# -- verification accepts honest proofs and rejects any single flipped bit ------------------------


@settings(max_examples=150, deadline=None)
@given(n=sizes, data=st.data())
def test_inclusion_proofs_verify_and_any_bit_flip_fails(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    items = data_items(n)
    leaf, root, proof = ref_hash(b"\x00" + items[m]), ref_mth(items), ref_path(m, items)
    assert verify_inclusion(leaf, m, n, proof, root)
    target = data.draw(st.sampled_from(["leaf", "root", "proof"] if proof else ["leaf", "root"]))
    bit = data.draw(st.integers(0, 255))
    if target == "leaf":
        assert not verify_inclusion(flip(leaf, bit), m, n, proof, root)
    elif target == "root":
        assert not verify_inclusion(leaf, m, n, proof, flip(root, bit))
    else:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        assert not verify_inclusion(leaf, m, n, bad, root)


@settings(max_examples=150, deadline=None)
@given(n=sizes, data=st.data())
def test_consistency_proofs_verify_and_any_bit_flip_fails(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n))
    items = data_items(n)
    old, new, proof = ref_mth(items[:m]), ref_mth(items), ref_proof(m, items)
    assert verify_consistency(m, n, old, new, proof)
    bit = data.draw(st.integers(0, 255))
    assert not verify_consistency(m, n, flip(old, bit), new, proof)
    assert not verify_consistency(m, n, old, flip(new, bit), proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        assert not verify_consistency(m, n, old, new, bad)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 200), data=st.data())
def test_inclusion_proof_for_another_index_fails(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    items = data_items(n)
    leaf, root, proof = ref_hash(b"\x00" + items[m]), ref_mth(items), ref_path(m, items)
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != m))
    assert not verify_inclusion(leaf, other, n, proof, root)
    # (The size is not checked by the path alone: the signed checkpoint carries it.)


def test_inclusion_rejects_index_outside_the_tree() -> None:
    items = data_items(4)
    assert not verify_inclusion(ref_hash(b"\x00" + items[0]), 4, 4, ref_path(0, items), ref_mth(items))


def test_inclusion_rejects_extra_proof_hashes() -> None:
    items = data_items(5)
    proof = ref_path(2, items)
    assert not verify_inclusion(ref_hash(b"\x00" + items[2]), 2, 5, [*proof, proof[0]], ref_mth(items))


def test_consistency_trivial_cases() -> None:
    root = ref_mth(data_items(3))
    assert verify_consistency(3, 3, root, root, [])
    assert not verify_consistency(3, 3, root, root, [root])
    assert verify_consistency(0, 3, EMPTY_ROOT, root, [])
    assert not verify_consistency(0, 3, root, root, [])
    assert not verify_consistency(2, 3, ref_mth(data_items(2)), root, [])  # empty proof fails
    assert not verify_consistency(3, 2, root, ref_mth(data_items(2)), [])


def test_rfc_9162_example_tree_of_seven() -> None:
    """The worked example of RFC 9162 §2.1.5: the path for d0 in a tree of 7 is [b, h, l]."""
    items = data_items(7)
    a, b = (ref_hash(b"\x00" + items[0]), ref_hash(b"\x00" + items[1]))
    c, d = ref_hash(b"\x00" + items[2]), ref_hash(b"\x00" + items[3])
    h = ref_hash(b"\x01" + c + d)
    j = ref_mth(items[4:6])
    e6 = ref_hash(b"\x00" + items[6])
    ll = ref_hash(b"\x01" + j + e6)
    store, _ = build(7)
    assert materialize(inclusion_plan(0, 7), store) == [b, h, ll]
    assert a == store.get_subtrees([(0, 0)])[0]
    # Consistency proofs of §2.1.5: 3 -> 7 is [c, d, g, l]; 4 -> 7 is [l]; 6 -> 7 is [i, j, k].
    g = ref_hash(b"\x01" + a + b)
    assert materialize(consistency_plan(3, 7), store) == [c, d, g, ll]
    assert materialize(consistency_plan(4, 7), store) == [ll]
    i, k = ref_mth(items[4:6]), ref_mth(items[0:4])
    assert materialize(consistency_plan(6, 7), store) == [i, e6, k]


# -- the storage shape ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 5000), data=st.data())
def test_proofs_read_logarithmically_many_stored_hashes(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    bound = 2 * n.bit_length()
    assert len({c for e in inclusion_plan(m, n) for c in e}) <= bound
    assert len({c for e in consistency_plan(m + 1, n) for c in e}) <= bound
    assert len(range_coords(0, n)) == bin(n).count("1")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), more=st.integers(1, 100))
def test_builder_resumed_from_its_frontier_continues_the_same_tree(n: int, more: int) -> None:
    store, _ = build(n)
    frontier = materialize([[c] for c in range_coords(0, n)], store)
    builder = TreeBuilder(n, frontier)
    for item in data_items(n + more)[n:]:
        store.put_subtrees(builder.push(ref_hash(b"\x00" + item)))
    assert builder.root() == ref_mth(data_items(n + more))
    assert root_at(n + more, store) == ref_mth(data_items(n + more))


def test_a_proof_over_an_unstored_subtree_says_so() -> None:
    store, _ = build(4)
    with pytest.raises(MissingSubtree):
        materialize(inclusion_plan(0, 8), store)


def test_unaligned_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="not aligned"):
        range_coords(3, 7)
