"""Exact and near-duplicate detection, and the leakage check that uses it.

Moderation data is full of copies: retweets, copy-pasta, spam sent a thousand times with one word
changed. A copy in train and its twin in test inflates every test metric, and copies with different
labels are label noise. This module finds both:

  exact_duplicate_groups(texts)      same text once normalised (case, punctuation, spacing, @mentions, URLs)
  near_duplicate_clusters(texts)     MinHash over character shingles + LSH, verified pairs merged by union-find
  find_duplicates(texts)             -> DuplicateReport (counts, clusters, clusters with conflicting labels)
  check_leakage(cluster_ids, split)  -> LeakageReport; .raise_if_leaking() raises LeakageError
  check_split_leakage(train, test)   the same for two externally given lists of texts

Run it on a file:

    from finesieve.data.dedupe import find_duplicates
    report = find_duplicates(texts)           # 20k tweets: a few seconds on 2 cores
    report.conflicting_label_clusters(labels)

Cluster and group ids are numbered by first appearance (the cluster of row 0 is 0), so the same texts
in the same order always give the same ids. Cluster *membership* does not depend on row order.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHash, MinHashLSH

from finesieve.data.errors import DataError, LeakageError

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_RETWEET = re.compile(r"^\s*rt\b[\s:]*", re.IGNORECASE)
_NOT_ALNUM = re.compile(
    r"[\W_]+"
)  # \W keeps letters and digits of every script; _ counts as a word char, so drop it too
_SPACES = re.compile(r"\s+")

EXAMPLE_CHARS = 80  # texts quoted in reports and error messages are cut to this many characters


def _dedupe_key(text: str) -> str:
    """The form two texts must share to count as exact duplicates.

    Deliberately private and simple (not finesieve.data.normalize): the split and the leakage guard must
    not change whenever the scoring normaliser learns a new trick. A retweet prefix, @mentions and URLs
    are dropped because "RT @a: same words" is the same message for leakage purposes; HTML entities
    (&amp;, &#128514;) are decoded first so they do not leave digit runs behind.
    """
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = _RETWEET.sub(" ", text)
    text = _MENTION.sub(" ", text)
    key = _SPACES.sub(" ", _NOT_ALNUM.sub(" ", text.casefold())).strip()
    if not key:
        # Emoji- or punctuation-only messages: keep their symbols, or "!!!" and "???" would be one message.
        key = _SPACES.sub(" ", text.casefold()).strip()
    return key


def _first_seen_ids(keys: Sequence[Hashable]) -> np.ndarray:
    """Integer ids for `keys`, numbered in order of first appearance."""
    ids: dict[Hashable, int] = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def exact_duplicate_groups(texts: Sequence[str]) -> np.ndarray:
    """(n,) int group id per text: equal ids mean equal normalised text; a singleton has an id of its own."""
    return _first_seen_ids([_dedupe_key(t) for t in texts])


def _shingles(key: str, size: int) -> list[bytes]:
    # A text shorter than a shingle is one shingle: two such texts match only when equal.
    if len(key) <= size:
        return [key.encode("utf-8", "surrogatepass")]
    return [s.encode("utf-8", "surrogatepass") for s in {key[i : i + size] for i in range(len(key) - size + 1)}]


class UnionFind:
    """Disjoint sets over 0..n-1; shared with split.py, which merges clusters with thread/user groups."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))  # a list: element access in these Python loops is ~5x faster than numpy's

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression keeps later finds O(1)-ish
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            # The smaller root wins, so the result does not depend on the order pairs arrive in.
            self.parent[max(ri, rj)] = min(ri, rj)

    def roots(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]


def _lsh_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows per band) catching a pair at exactly `threshold` with probability >= `recall`.

    datasketch's own choice balances false positives against false negatives and finds only ~40% of
    pairs at J=0.8 with 128 permutations. Every candidate is verified afterwards, so a false candidate
    costs one vectorised comparison while a missed pair is a leak: take the longest bands (fewest
    candidates) that still reach the recall.
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def near_duplicate_clusters(
    texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5, seed: int = 1
) -> np.ndarray:
    """(n,) int cluster id per text; texts whose estimated Jaccard similarity is >= threshold share an id.

    Similarity is over the sets of `shingle_size`-character shingles of the normalised text. LSH proposes
    candidate pairs, each is kept only if its MinHash estimate reaches `threshold`, and kept pairs are
    merged transitively (A~B and B~C puts A, B, C in one cluster). Exact duplicates always share a cluster.
    """
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"threshold={threshold}: expected a Jaccard similarity in (0, 1], e.g. 0.8")
    if shingle_size < 1:
        raise DataError(f"shingle_size={shingle_size}: expected a positive number of characters, e.g. 5")
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)

    # Hash each distinct normalised text once: exact duplicates share a MinHash and are merged below anyway.
    keys = [_dedupe_key(t) for t in texts]
    exact = _first_seen_ids(keys)
    unique_keys = list(dict.fromkeys(keys))  # in first-seen order, so unique_keys[exact[i]] == keys[i]
    minhashes = MinHash.bulk((_shingles(k, shingle_size) for k in unique_keys), num_perm=num_perm, seed=seed)
    signatures = np.vstack([m.hashvalues for m in minhashes])  # (n_unique, num_perm)

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=_lsh_bands(threshold, num_perm))
    with lsh.insertion_session() as session:
        for u, m in enumerate(minhashes):
            session.insert(u, m, check_duplication=False)
    left, right = [], []
    for u, m in enumerate(minhashes):
        for v in lsh.query(m):
            if v > u:
                left.append(u)
                right.append(v)

    uf = UnionFind(len(unique_keys))
    if left:
        a, b = np.array(left), np.array(right)
        for start in range(0, len(a), 50_000):  # chunks bound memory: 50k pairs x num_perm comparisons
            sl = slice(start, start + 50_000)
            similarity = (signatures[a[sl]] == signatures[b[sl]]).mean(axis=1)
            for u, v in zip(a[sl][similarity >= threshold], b[sl][similarity >= threshold]):
                uf.union(int(u), int(v))
    roots = np.array(uf.roots())
    return _first_seen_ids(roots[exact].tolist())


def _clusters_of(cluster_ids: np.ndarray) -> list[list[int]]:
    """Row indices of every cluster with more than one member, largest first (ties: first row first)."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(np.asarray(cluster_ids).tolist()):
        members[c].append(i)
    clusters = [rows for rows in members.values() if len(rows) > 1]
    return sorted(clusters, key=lambda rows: (-len(rows), rows[0]))


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


@dataclass
class DuplicateReport:
    """How many rows repeat others, and which rows cluster together."""

    n: int
    n_exact_dupes: int  # rows whose normalised text equals an earlier row's
    n_near_dupe_rows: int  # rows in a near-duplicate cluster of size > 1 (exact duplicates included)
    clusters: list[list[int]]  # row indices of each cluster of size > 1, largest first
    cluster_ids: np.ndarray = field(repr=False)  # (n,) near-duplicate cluster id per row, for check_leakage
    params: dict = field(default_factory=dict)  # the near_duplicate_clusters arguments used

    def conflicting_label_clusters(self, labels: Sequence) -> list[list[int]]:
        """Clusters whose members carry different labels: suspected label noise, worth a human look."""
        if len(labels) != self.n:
            raise DataError(
                f"labels has {len(labels)} entries but the report covers {self.n} texts: pass one label per text"
            )
        return [rows for rows in self.clusters if len({_hashable(labels[i]) for i in rows}) > 1]

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "n_exact_dupes": self.n_exact_dupes,
            "n_near_dupe_rows": self.n_near_dupe_rows,
            "n_clusters": len(self.clusters),
            "largest_cluster": len(self.clusters[0]) if self.clusters else 1,
            "clusters": [list(rows) for rows in self.clusters],
            "params": dict(self.params),
        }


def _hashable(label) -> Hashable:
    # Multi-label rows carry tuples (or lists, from JSON); order does not matter.
    return tuple(sorted(label)) if isinstance(label, (list, tuple)) else label


def find_duplicates(texts: Sequence[str], **kw) -> DuplicateReport:
    """Exact and near-duplicates of `texts`; `kw` goes to near_duplicate_clusters (threshold, num_perm, ...)."""
    exact = exact_duplicate_groups(texts)
    cluster_ids = near_duplicate_clusters(texts, **kw)
    clusters = _clusters_of(cluster_ids)
    return DuplicateReport(
        n=len(texts),
        n_exact_dupes=len(texts) - len(np.unique(exact)),
        n_near_dupe_rows=sum(len(rows) for rows in clusters),
        clusters=clusters,
        cluster_ids=cluster_ids,
        params=dict(kw),
    )


@dataclass
class LeakageReport:
    """Near-duplicate clusters with members in a protected split (test) and in another split."""

    n_leaking_clusters: int
    n_leaking_rows: int
    clusters: list[list[int]]  # row indices of each leaking cluster
    examples: list[tuple[str, str]]  # (protected text, other-split text), cut to EXAMPLE_CHARS; up to 3
    protected: tuple[str, ...]

    @property
    def leaking(self) -> bool:
        return self.n_leaking_clusters > 0

    def raise_if_leaking(self) -> None:
        if not self.leaking:
            return
        shown = "\n".join(f"  {a!r}  ~  {b!r}" for a, b in self.examples[:3])
        raise LeakageError(
            f"{self.n_leaking_clusters} near-duplicate cluster(s) ({self.n_leaking_rows} rows) straddle the "
            f"{'/'.join(self.protected)} split and another split, so test metrics would be inflated. Examples:\n"
            f"{shown}\nFix: use finesieve's group-aware split (finesieve.data.split.make_splits), "
            f"or remove/merge the duplicates before splitting."
        )

    def to_dict(self) -> dict:
        return {
            "n_leaking_clusters": self.n_leaking_clusters,
            "n_leaking_rows": self.n_leaking_rows,
            "examples": [list(pair) for pair in self.examples],
            "protected": list(self.protected),
        }


def check_leakage(
    cluster_ids: Sequence[int],
    split: Sequence[str],
    *,
    protected: Sequence[str] = ("test",),
    texts: Sequence[str] | None = None,
) -> LeakageReport:
    """Find clusters with a member in a protected split and a member in any other split.

    `cluster_ids` is one id per row (near_duplicate_clusters), `split` one split name per row
    ("train", "val", "test"). Pass `texts` to get readable examples; without them examples quote row numbers.
    """
    cluster_ids = np.asarray(cluster_ids)
    split = np.asarray(split, dtype=object)
    if len(cluster_ids) != len(split) or (texts is not None and len(texts) != len(split)):
        raise DataError(
            f"cluster_ids has {len(cluster_ids)} entries, split {len(split)}"
            + (f", texts {len(texts)}" if texts is not None else "")
            + ": pass one entry per row to each"
        )
    protected = tuple(protected)
    leaking, examples = [], []
    for rows in _clusters_of(cluster_ids):
        names = split[rows]
        for p in protected:
            inside = [r for r, s in zip(rows, names) if s == p]
            outside = [r for r, s in zip(rows, names) if s != p]
            if inside and outside:
                leaking.append(rows)
                if len(examples) < 3:
                    a, b = inside[0], outside[0]
                    if texts is not None:
                        examples.append((_cut(texts[a]), _cut(texts[b])))
                    else:
                        examples.append((f"row {a} ({split[a]})", f"row {b} ({split[b]})"))
                break
    return LeakageReport(
        n_leaking_clusters=len(leaking),
        n_leaking_rows=sum(len(rows) for rows in leaking),
        clusters=leaking,
        examples=examples,
        protected=protected,
    )


def check_split_leakage(train_texts: Sequence[str], test_texts: Sequence[str], threshold: float = 0.8) -> LeakageReport:
    """Leakage between two lists made elsewhere (e.g. a benchmark's own train/test files)."""
    texts = list(train_texts) + list(test_texts)
    cluster_ids = near_duplicate_clusters(texts, threshold=threshold)
    split = ["train"] * len(train_texts) + ["test"] * len(test_texts)
    return check_leakage(cluster_ids, split, protected=("test",), texts=texts)
