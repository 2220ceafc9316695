"""Exact and near-duplicate detection and the leakage check, on real Davidson tweets with injected copies."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from finesieve.data.dedupe import (
    _dedupe_key,
    check_leakage,
    check_split_leakage,
    exact_duplicate_groups,
    find_duplicates,
    near_duplicate_clusters,
)
from finesieve.data.errors import DataError, LeakageError


def changed_word(text: str) -> str:
    """Replace the first word of 4-6 letters with another word: a real near-duplicate, not an exact one."""
    return re.sub(r"\b[A-Za-z]{4,6}\b", "zebra", text, count=1)


def variants(text: str) -> list[str]:
    return [
        changed_word(text),  # one word changed
        text + " !!!",  # extra punctuation
        text.upper(),  # case change
        "RT @copycat_01: " + text,  # retweet prefix
    ]


@pytest.fixture(scope="module")
def originals(davidson_slice) -> list[str]:
    """50 long real tweets that have no near-duplicate of their own in the slice."""
    texts = davidson_slice["text"].tolist()
    clusters = near_duplicate_clusters(texts)
    sizes = np.bincount(clusters)
    long_alone = [
        t for t, c in zip(texts, clusters) if sizes[c] == 1 and len(_dedupe_key(t)) >= 130 and changed_word(t) != t
    ]
    assert len(long_alone) >= 50, "the slice should hold 50 long singleton tweets"
    return long_alone[:50]


def test_dedupe_key_folds_case_punctuation_retweets_mentions_urls_and_entities():
    assert _dedupe_key("RT @someone: Hello,   WORLD!!! http://t.co/abc") == "hello world"
    assert _dedupe_key("hello world &#128514;&amp;") == "hello world"
    # Symbol-only messages keep their symbols instead of all collapsing to "".
    assert _dedupe_key("!!!") != _dedupe_key("???")


def test_exact_groups_match_normalised_text_and_number_by_first_appearance():
    texts = ["Hello world", "something else", "hello, WORLD!", "RT @x: hello world", "third"]
    groups = exact_duplicate_groups(texts)
    assert groups.tolist() == [0, 1, 0, 0, 2]


def test_injected_variants_cluster_with_their_originals_and_nothing_else(davidson_slice, originals):
    base = davidson_slice["text"].tolist()
    injected = [v for t in originals for v in variants(t)]
    texts = base + injected
    clusters = near_duplicate_clusters(texts)

    position = {t: i for i, t in enumerate(base)}
    for k, original in enumerate(originals):
        own = clusters[position[original]]
        mine = clusters[len(base) + 4 * k : len(base) + 4 * (k + 1)]
        assert (mine == own).all(), f"variants of {original!r} did not all cluster with it"
        # Exactly the original and its 4 variants: no unrelated tweet was pulled in.
        assert (clusters == own).sum() == 5
    # The 50 originals stay apart from each other.
    assert len({clusters[position[t]] for t in originals}) == 50


def test_a_changed_word_is_a_near_duplicate_not_an_exact_one(originals):
    text = originals[0]
    pair = [text, changed_word(text)]
    assert len(set(exact_duplicate_groups(pair).tolist())) == 2
    assert len(set(near_duplicate_clusters(pair).tolist())) == 1


def test_short_and_empty_texts_are_handled():
    texts = ["hi", "HI!", "ho", "", "", "!!!", "???", "ok"]
    clusters = near_duplicate_clusters(texts)
    assert clusters[0] == clusters[1]
    assert clusters[3] == clusters[4]
    assert len({clusters[i] for i in (0, 2, 3, 5, 6, 7)}) == 6
    assert near_duplicate_clusters([]).shape == (0,)


def test_bad_threshold_is_refused_with_the_fix():
    with pytest.raises(DataError, match="threshold"):
        near_duplicate_clusters(["a b c"], threshold=0.0)


def test_report_counts_exact_and_near_duplicates(davidson_slice, originals):
    base = davidson_slice["text"].tolist()
    texts = base + [originals[0].upper(), originals[1] + "!!", changed_word(originals[2])]
    before = find_duplicates(base)
    report = find_duplicates(texts, threshold=0.8)

    assert report.n == len(texts)
    assert report.n_exact_dupes == before.n_exact_dupes + 2  # upper-cased and extra-punctuation copies
    assert report.n_near_dupe_rows == before.n_near_dupe_rows + 6  # three new pairs
    sizes = [len(c) for c in report.clusters]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) >= 2
    d = report.to_dict()
    json.dumps(d)
    assert d["n_clusters"] == len(report.clusters) and d["params"] == {"threshold": 0.8}


def test_conflicting_label_clusters_flag_copies_with_different_labels(davidson_slice, originals):
    base = davidson_slice["text"].tolist()
    labels = davidson_slice["label"].tolist()
    position = {t: i for i, t in enumerate(base)}
    first, second = originals[0], originals[1]
    flipped = "neither" if labels[position[first]] != "neither" else "offensive"
    texts = base + [changed_word(first), second.upper()]
    all_labels = labels + [flipped, labels[position[second]]]  # first's copy disagrees, second's agrees

    report = find_duplicates(texts)
    conflicting = report.conflicting_label_clusters(all_labels)
    rows = {i for c in conflicting for i in c}
    assert position[first] in rows and len(base) in rows
    assert position[second] not in rows
    with pytest.raises(DataError, match="one label per text"):
        report.conflicting_label_clusters(all_labels[:-1])


def test_multilabel_tuples_compare_regardless_of_order():
    report = find_duplicates(["same message here", "same message here!"])
    assert report.conflicting_label_clusters([("a", "b"), ("b", "a")]) == []
    assert report.conflicting_label_clusters([("a",), ("a", "b")]) == [[0, 1]]


def test_leakage_is_detected_on_a_bad_split_and_the_error_says_how_to_fix_it(davidson_slice, originals):
    base = davidson_slice["text"].tolist()
    texts = base + [changed_word(t) for t in originals[:10]]
    clusters = near_duplicate_clusters(texts)
    split = np.array(["train"] * len(texts), dtype=object)
    split[len(base) :] = "test"  # the copies go to test, their originals stay in train

    report = check_leakage(clusters, split, texts=texts)
    assert report.n_leaking_clusters == 10 and report.n_leaking_rows == 20
    assert 1 <= len(report.examples) <= 3
    assert all(len(a) <= 80 and len(b) <= 80 for a, b in report.examples)
    with pytest.raises(LeakageError) as err:
        report.raise_if_leaking()
    message = str(err.value)
    assert "10 near-duplicate cluster(s)" in message
    assert "group-aware split" in message and "remove/merge the duplicates" in message
    assert report.examples[0][0] in message


def test_no_leakage_when_copies_share_a_split_or_avoid_the_protected_one(davidson_slice, originals):
    texts = list(originals[:5]) + [changed_word(t) for t in originals[:5]]
    clusters = near_duplicate_clusters(texts)
    same = np.array(["test"] * 5 + ["test"] * 5, dtype=object)
    check_leakage(clusters, same).raise_if_leaking()
    train_val = np.array(["train"] * 5 + ["val"] * 5, dtype=object)
    assert check_leakage(clusters, train_val).n_leaking_clusters == 0  # only test is protected by default
    assert check_leakage(clusters, train_val, protected=("val",)).n_leaking_clusters == 5
    report = check_leakage(clusters, np.array(["train"] * 5 + ["test"] * 5, dtype=object))
    assert report.examples[0][0].startswith("row ")  # without texts, rows are quoted


def test_check_leakage_refuses_mismatched_lengths():
    with pytest.raises(DataError, match="one entry per row"):
        check_leakage([0, 1, 2], ["train", "test"])


def test_check_split_leakage_between_two_external_lists(davidson_slice, originals):
    unrelated = davidson_slice["text"].tolist()[:200]
    train = [t for t in unrelated if t not in originals] + list(originals[:20])
    test = [changed_word(t) for t in originals[:20]] + list(originals[20:30])
    report = check_split_leakage(train, test)
    assert report.n_leaking_clusters == 20
    assert check_split_leakage(list(originals[:20]), list(originals[20:40])).n_leaking_clusters == 0


def test_clustering_hashes_each_text_once_and_compares_lsh_candidates_only(davidson_slice, monkeypatch):
    """What keeps clustering fast (the full 20k file in seconds), checked without a clock: each distinct
    normalised text is MinHashed once (exact copies reuse it), and only the pairs LSH proposes are compared,
    a tiny share of all pairs (measured: 38 of 2M on this slice)."""
    from finesieve.data import dedupe

    texts = davidson_slice["text"].tolist()
    texts += texts[:300]  # exact copies: hashed once
    n_unique = len({_dedupe_key(t) for t in texts})
    expected = near_duplicate_clusters(texts)
    hashed, proposed = [], []

    class CountingMinHash(dedupe.MinHash):
        @classmethod
        def bulk(cls, sets, **kwargs):
            sets = list(sets)
            hashed.append(len(sets))
            return super().bulk(sets, **kwargs)

    class CountingLSH(dedupe.MinHashLSH):
        def query(self, minhash):
            found = super().query(minhash)
            proposed.append(len(found) - 1)  # every text finds itself
            return found

    monkeypatch.setattr(dedupe, "MinHash", CountingMinHash)
    monkeypatch.setattr(dedupe, "MinHashLSH", CountingLSH)
    np.testing.assert_array_equal(near_duplicate_clusters(texts), expected)
    assert hashed == [n_unique] and len(proposed) == n_unique
    assert sum(proposed) / 2 < 1e-3 * n_unique * (n_unique - 1) / 2
