"""Input drift: how a window of production texts differs from the validation texts saved with the run.

    from finesieve.monitor.inputs import input_drift, rising_ngrams
    inputs = input_drift(run.manifest.reference, texts, run_dir=run.path)
    inputs.as_dict()["oov_rate"]       # {"window": 0.21, "reference": 0.08}
    rising_ngrams(run.manifest.reference.inputs, texts)[0].ngram    # 'claim <URL>': the message that drives it

The texts are the ones the model scored, cleaned and redacted (what the service stores in messages.text and
`finesieve score --include-text` writes); the reference (`manifest.InputReference`) was counted the same way, with
the same tokeniser, from the validation split. Per window:

    length        histogram on the reference's fixed bins, PSI and binned KS as for scores (`monitor.drift`)
    entity_share  share of texts holding each placeholder (<EMAIL>, <PHONE>, ...)
    oov_rate      share of word tokens outside the training split's commonest words
    script_mix    share of letters per script (latin, cyrillic, arabic, cjk, other) and the PSI between the mixes
    embedding     MMD^2 between sentence embeddings of up to 256 window texts and the run's reference sample, RBF
                  kernel with the median heuristic, and its permutation p-value (null when the run saved no
                  reference embeddings or the window is too small)

and the n-grams whose share of texts rose most: each uni- or bigram held by at least `MIN_TEXTS` window texts is
ranked by the binomial z-score of its window count against the reference share (a new campaign's phrase, at 4%
of texts where validation had 0.1%, outranks "to" moving from 30% to 33%). An n-gram missing from the reference's
top n-grams counts at the smallest share kept there, an upper bound, so its lift is never overstated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from finesieve.data.text_stats import (
    SCRIPTS,
    entity_shares,
    length_histogram,
    ngram_document_counts,
    ngrams,
    oov_rate,
    script_counts,
    tokens,
)
from finesieve.manifest import InputReference, ReferenceStats, read_reference_embeddings
from finesieve.models.sentence_embeddings import embed_texts, embedding_sample
from finesieve.monitor.drift import ks_binned, psi

PERMUTATIONS = 1000  # for the MMD p-value: the smallest it can be is 1 / 1001
MIN_EMBEDDED = 20  # fewer window texts than this: no embedding distance (its p-value would say little)
TOP_NGRAMS = 20
MIN_TEXTS = 3  # an n-gram in fewer window texts is noise, not a driver
EXAMPLES = 3
EXAMPLE_CHARS = 300


@dataclass(frozen=True)
class EmbeddingDistance:
    mmd: float  # biased MMD^2 estimate between the two samples
    p_value: float
    n: int  # window texts embedded


@dataclass(frozen=True)
class InputDrift:
    n: int  # texts in the window
    length: dict  # psi, ks, ks_pvalue, window_q50, reference_q50
    entity_share: dict[str, dict[str, float]]  # entity -> {"window", "reference"}
    oov_rate: dict[str, float | None]  # {"window", "reference"}
    script_mix: dict  # {"psi", "window": {script: share}, "reference": {script: share}}
    embedding: EmbeddingDistance | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RisingNgram:
    ngram: str
    window_share: float
    reference_share: float  # the smallest kept reference share when the n-gram is not among them
    lift: float
    z: float  # binomial z-score of the window count against the reference share: the ranking
    examples: list[str]

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "z"}


def input_drift(
    stats: ReferenceStats,
    texts: Sequence[str],
    *,
    run_dir: str | Path | None = None,
    embeddings: bool = True,
    seed: int = 0,
) -> InputDrift | None:
    """The window's input statistics against the run's reference; None for a window without texts or a run whose
    reference keeps no input statistics. The embedding distance is computed when `embeddings` and the reference
    names an embeddings file (read from `run_dir`)."""
    reference = stats.inputs
    if not texts or reference is None:
        return None
    window_lengths = length_histogram(texts)
    ks, ks_pvalue = ks_binned(reference.length_histogram, window_lengths)
    scripts = script_counts(texts)
    letters = sum(scripts.values())
    window_mix = {s: c / letters if letters else 0.0 for s, c in scripts.items()}
    reference_mix = {s: reference.script_mix.get(s, 0.0) for s in SCRIPTS}
    mixes_known = letters > 0 and sum(reference_mix.values()) > 0
    window_entities = entity_shares(texts)
    reference_texts = None
    if embeddings and reference.embeddings is not None and run_dir is not None and len(texts) >= MIN_EMBEDDED:
        reference_texts = read_reference_embeddings(run_dir, reference)
    return InputDrift(
        n=len(texts),
        length={
            "psi": psi(reference.length_histogram, window_lengths),
            "ks": ks,
            "ks_pvalue": ks_pvalue,
            "window_q50": float(np.median([len(t) for t in texts])),
            "reference_q50": stats.length_quantiles.get("q50"),
        },
        entity_share={
            e: {"window": s, "reference": reference.entity_share.get(e, 0.0)} for e, s in window_entities.items()
        },
        oov_rate={"window": oov_rate(texts, reference.vocabulary), "reference": reference.oov_rate},
        script_mix={
            "psi": psi(list(reference_mix.values()), list(window_mix.values())) if mixes_known else None,
            "window": window_mix,
            "reference": reference_mix,
        },
        embedding=None if reference_texts is None else embedding_distance(reference_texts, texts, seed=seed),
    )


def embedding_distance(reference: np.ndarray, texts: Sequence[str], seed: int = 0) -> EmbeddingDistance:
    """MMD^2 and its permutation p-value between `reference` embeddings and those of a sample of `texts`."""
    window = embed_texts(embedding_sample(texts, seed=seed))
    mmd, p_value = mmd_test(reference, window, seed=seed)
    return EmbeddingDistance(mmd=mmd, p_value=p_value, n=len(window))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
    """(biased MMD^2 between samples x (n, d) and y (m, d), its permutation p-value).

    RBF kernel exp(-|a - b|^2 / (2 sigma^2)) with sigma^2 the median squared distance over the pooled samples (the
    median heuristic). The statistic is w' K w with w = 1/n on x's rows and -1/m on y's; a permutation reassigns
    the pooled rows, so all of them are one matrix product over the kernel. p = (1 + #{permuted >= observed}) /
    (1 + permutations): never 0, exact under exchangeability."""
    pooled = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    n, total = len(x), len(pooled)
    squares = np.sum(pooled**2, axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * pooled @ pooled.T, 0.0)
    off_diagonal = distances[np.triu_indices(total, k=1)]
    bandwidth = float(np.median(off_diagonal)) or 1.0  # identical samples: any bandwidth gives MMD 0
    kernel = np.exp(-distances / (2 * bandwidth))
    weights = np.where(np.arange(total) < n, 1.0 / n, -1.0 / (total - n))
    observed = float(weights @ kernel @ weights)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(weights) for _ in range(permutations)])  # (P, total)
    null = np.sum((shuffled @ kernel) * shuffled, axis=1)
    # A permuted statistic equal to the observed one (up to rounding) counts as reaching it.
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (1 + permutations)
    return max(observed, 0.0), p_value


def rising_ngrams(
    reference: InputReference,
    texts: Sequence[str],
    *,
    top: int = TOP_NGRAMS,
    min_texts: int = MIN_TEXTS,
    examples: int = EXAMPLES,
) -> list[RisingNgram]:
    """The `top` n-grams whose share of the window's texts rose most against the reference, with example texts."""
    n = len(texts)
    if n == 0:
        return []
    floor = min(reference.ngram_shares.values(), default=1.0 / max(reference.n, 1))
    scored = []
    for gram, count in ngram_document_counts(texts).items():
        if count < min_texts:
            continue
        share, ref = count / n, reference.ngram_shares.get(gram, floor)
        if share <= ref:
            continue
        z = (share - ref) / math.sqrt(ref * (1 - ref) / n) if 0 < ref < 1 else math.inf
        scored.append((z, share, gram, ref))
    scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
    chosen = scored[:top]
    found: dict[str, list[str]] = {gram: [] for _, _, gram, _ in chosen}
    for text in texts:  # first texts holding each chosen n-gram, in window order
        if all(len(v) >= examples for v in found.values()):
            break
        grams = ngrams(tokens(text))
        for gram, held in found.items():
            if len(held) < examples and gram in grams:
                held.append(text[:EXAMPLE_CHARS])
    return [RisingNgram(gram, share, ref, share / ref, z, found[gram]) for z, share, gram, ref in chosen]
