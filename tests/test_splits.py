"""Tests of seghz.data.splits and seghz.data.folders.holdout_split."""
from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.data.folders import holdout_split
from seghz.data.splits import class_distribution, content_key, copies_across, greedy_max_entropy, hash_fraction


def _entropy_of_mean(dists, idx) -> float:
    """Shannon entropy (nats) of the plain average of the chosen class distributions, by a Python loop."""
    c = len(dists[0])
    mean = [sum(dists[i][j] for i in idx) / len(idx) for j in range(c)]
    return -sum(p * math.log(p) for p in mean if p > 0)


def _random_dists(seed, n, c):
    rng = np.random.default_rng(seed)
    d = rng.dirichlet(np.full(c, 0.5), size=n)
    # some items miss classes entirely, as real tiles do
    d[rng.random((n, c)) < 0.3] = 0
    d[d.sum(1) == 0, 0] = 1
    return (d / d.sum(1, keepdims=True)).tolist()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 7), c=st.integers(2, 5))
def test_greedy_matches_brute_force_for_k1_and_k2(seed, n, c):
    dists = _random_dists(seed, n, c)
    # k = 1: the single item of highest entropy
    h1 = [_entropy_of_mean(dists, [i]) for i in range(n)]
    best1 = max(range(n), key=lambda i: (round(h1[i], 12), i))  # ties -> later index
    g1 = greedy_max_entropy(np.array(dists), 1)
    assert len(g1) == 1
    assert h1[g1[0]] == pytest.approx(h1[best1], abs=1e-12)
    # k = 2: the best first pick, then the best partner given the first
    first = g1[0]
    h2 = {j: _entropy_of_mean(dists, [first, j]) for j in range(n) if j != first}
    best2 = max(h2, key=lambda j: (round(h2[j], 12), j))
    g2 = greedy_max_entropy(np.array(dists), 2)
    assert g2[0] == first
    assert g2[1] != first
    assert h2[g2[1]] == pytest.approx(h2[best2], abs=1e-12)
    # greedy is not exhaustive, but its pair is never better than the exhaustive best pair
    best_pair = max(_entropy_of_mean(dists, list(p)) for p in itertools.combinations(range(n), 2))
    assert _entropy_of_mean(dists, g2) <= best_pair + 1e-12


def test_greedy_by_hand():
    dists = np.array(
        [
            [1.0, 0.0, 0.0],  # H = 0
            [0.5, 0.5, 0.0],  # H = ln 2
            [0.0, 0.0, 1.0],  # H = 0
            [0.0, 1.0, 0.0],  # H = 0
        ]
    )
    # first: item 1 (ln 2); second: with item 2 the mean is (.25, .25, .5) -> 1.5 ln 2, the best
    assert greedy_max_entropy(dists, 2) == [1, 2]
    # third: item 0 gives (1.5, .5, 1)/3 and item 3 gives (.5, 1.5, 1)/3: equal entropy, tie -> later index 3
    assert greedy_max_entropy(dists, 3) == [1, 2, 3]
    assert sorted(greedy_max_entropy(dists, 10)) == [0, 1, 2, 3]  # k > n: everything, once


def test_greedy_ties_go_to_later_index():
    dists = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    assert greedy_max_entropy(dists, 1) == [1]


def test_class_distribution_ignores_255():
    m = np.array([[0, 0, 2], [255, 255, 1]], np.uint8)
    assert class_distribution(m, 3).tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert class_distribution(np.full((2, 2), 255, np.uint8), 3).tolist() == [0, 0, 0]


def test_class_distribution_is_the_metrics_rule():
    """One class histogram: the splits' one is seghz.metrics.class_frequencies, so both agree on every mask and
    refuse the same values (it used to drop [0, 1, 9, 9]'s 9s, giving [.5, .5, 0])."""
    from seghz.metrics import class_frequencies

    rng = np.random.default_rng(1)
    m = rng.integers(0, 4, (6, 6)).astype(np.uint8)
    m[rng.random((6, 6)) < 0.3] = 255
    assert class_distribution(m, 4).tolist() == class_frequencies(m, 4).tolist()
    with pytest.raises(ValueError, match="class index 9 outside 0..2"):
        class_distribution(np.array([0, 1, 9, 9], np.uint8), 3)


# ---------------------------------------------------------------- hash splits


def test_hash_fraction_is_stable_and_uniform():
    assert hash_fraction("tile_001") == hash_fraction("tile_001")
    assert hash_fraction("tile_001") != hash_fraction("tile_002")
    assert hash_fraction("tile_001", "a") != hash_fraction("tile_001", "b")
    vals = [hash_fraction(f"k{i}") for i in range(2000)]
    assert all(0 <= v < 1 for v in vals)
    share = sum(v < 0.2 for v in vals) / len(vals)
    assert 0.16 < share < 0.24  # binomial(2000, 0.2): sd ~ 0.009
    # independent recomputation: sha1 of "salt:key", first 8 hex digits / 2**32
    import hashlib

    assert hash_fraction("abc") == int(hashlib.sha1(b"seghz:abc").hexdigest()[:8], 16) / 2**32


def _items(n, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = rng.integers(0, num_classes, (6, 6)).astype(np.uint8)
        m[m == rng.integers(0, num_classes)] = 255  # some ignore
        out.append((f"tile_{i:03d}", np.zeros((6, 6, 3), np.uint8), m))
    return out


def test_holdout_split_disjoint_and_complete():
    items = _items(60)
    sp = holdout_split(items, 4, test_fraction=0.25, val_count=8)
    names = {k: [it[0] for it in v] for k, v in sp.items()}
    sets = {k: set(v) for k, v in names.items()}
    assert not sets["train"] & sets["val"]
    assert not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert sets["train"] | sets["val"] | sets["test"] == {it[0] for it in items}
    assert sum(len(v) for v in names.values()) == len(items)  # no duplicates
    assert len(names["val"]) == 8
    # test = exactly the items whose hash falls below the fraction
    assert sets["test"] == {it[0] for it in items if hash_fraction(it[0]) < 0.25}
    # val = the greedy max-entropy pick among the non-test items
    rest = [it for it in items if it[0] not in sets["test"]]
    pick = greedy_max_entropy(np.stack([class_distribution(it[2], 4) for it in rest]), 8)
    assert sets["val"] == {rest[i][0] for i in pick}


def test_holdout_split_reproducible_and_order_independent():
    items = _items(40)
    a = holdout_split(items, 4, test_fraction=0.3, val_count=5)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    b = holdout_split(shuffled, 4, test_fraction=0.3, val_count=5)
    assert {it[0] for it in a["test"]} == {it[0] for it in b["test"]}
    again = holdout_split(items, 4, test_fraction=0.3, val_count=5)
    for k in ("train", "val", "test"):
        assert [it[0] for it in a[k]] == [it[0] for it in again[k]]
    other_salt = holdout_split(items, 4, test_fraction=0.3, val_count=5, salt="other")
    assert {it[0] for it in other_salt["test"]} != {it[0] for it in a["test"]}


def test_holdout_split_without_val():
    items = _items(10)
    sp = holdout_split(items, 4, test_fraction=0.0, val_count=0)
    assert sp["val"] == [] and sp["test"] == []
    assert [it[0] for it in sp["train"]] == [it[0] for it in items]


# --- identical images under two names (GID-15 has four such pairs) -------------------------------------------------

def _dup_items(pool_ids, num_classes=4, seed=0):
    """Items whose image is picture number ``pool_ids[i]`` of a small pool: equal ids = byte-identical images."""
    rng = np.random.default_rng(seed)
    pool = {k: np.full((6, 6, 3), k, np.uint8) for k in set(pool_ids)}
    return [(f"tile_{i:03d}", pool[k].copy(), rng.integers(0, num_classes, (6, 6)).astype(np.uint8))
            for i, k in enumerate(pool_ids)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 25), min_size=2, max_size=40), st.floats(0.05, 0.6), st.integers(0, 6))
def test_grouped_split_never_puts_one_picture_on_two_sides(pool_ids, frac, val_count):
    items = _dup_items(pool_ids)
    sp = holdout_split(items, 4, test_fraction=frac, val_count=val_count, group_duplicates=True)
    side = {}
    for name, its in sp.items():
        for it in its:
            side.setdefault(content_key(it[1]), set()).add(name)
    assert all(len(v) == 1 for v in side.values()), side
    assert sorted(it[0] for v in sp.values() for it in v) == sorted(it[0] for it in items)
    # a group follows the hash of its first stem
    first = {}
    for stem, img, _ in sorted(items, key=lambda it: it[0]):
        first.setdefault(content_key(img), stem)
    assert {it[0] for it in sp["test"]} == {s for s, img, _ in items if hash_fraction(first[content_key(img)]) < frac}
    # with no duplicates the grouped split is the plain one
    uniq = _dup_items(list(range(len(pool_ids))))
    a = holdout_split(uniq, 4, frac, val_count, group_duplicates=True)
    b = holdout_split(uniq, 4, frac, val_count)
    assert all([it[0] for it in a[k]] == [it[0] for it in b[k]] for k in a)


def test_grouped_split_pulls_copies_of_validation_images_into_validation():
    # tile_000 and tile_005 are one picture; with no test split, greedy validation picks tile_005 (the only
    # tile with class 3), and its copy tile_000 must not stay in training
    items = _dup_items([7, 1, 2, 3, 4, 7])
    items = [(s, img, np.full((6, 6), 3 if s == "tile_005" else 0, np.uint8)) for s, img, _ in items]
    plain = holdout_split(items, 4, test_fraction=0.0, val_count=1)
    assert [it[0] for it in plain["val"]] == ["tile_005"] and "tile_000" in {it[0] for it in plain["train"]}
    grouped = holdout_split(items, 4, test_fraction=0.0, val_count=1, group_duplicates=True)
    assert [it[0] for it in grouped["val"]] == ["tile_000", "tile_005"]


def test_content_key_of_files_and_arrays(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 3_000_000)  # longer than one read chunk
    (tmp_path / "b.bin").write_bytes(b"x" * 3_000_000)
    (tmp_path / "c.bin").write_bytes(b"x" * 2_999_999 + b"y")
    assert content_key(a) == content_key(tmp_path / "b.bin") != content_key(tmp_path / "c.bin")
    z = np.zeros((4, 6), np.uint8)
    assert content_key(z) == content_key(z.copy()) != content_key(z.reshape(6, 4))  # the shape counts
    assert content_key(z) != content_key(z.astype(np.uint16))
    assert content_key(z[:, ::2]) == content_key(np.zeros((4, 3), np.uint8))  # views hash their values


def test_copies_across_names_the_outside_twin():
    keys = {"t1": "A", "t2": "B", "tr1": "C", "tr2": "A", "tr3": "A", "t3": "D", "t4": "D"}
    assert copies_across(keys, ["t1", "t2", "t3", "t4"]) == {"t1": "tr2"}  # t3/t4: both held out, no leak
    assert copies_across(keys, ["t1", "missing"]) == {"t1": "tr2"}
    assert copies_across(keys, []) == {}
