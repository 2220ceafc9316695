"""The matcher contract (TF-IDF, BM25, embeddings) on real resumes: shapes, determinism, exact terms, long resumes
read to the end, save/load equality, and the BM25 pair score against rank_bm25's own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from finesieve.data.errors import ConfigError, DataError
from finesieve.models.base import NotFittedError
from finesieve.models.matching import (
    MATCHER_FILE,
    Bm25Matcher,
    EmbeddingMatcher,
    EmbeddingMatcherConfig,
    Matcher,
    TfidfMatcher,
    chunk_text,
    load_matcher,
    new_matcher,
    terms,
)

KINDS = ("tfidf", "bm25", "embeddings")
OTHER_FAMILIES = ("ADVOCATE", "ARTS", "FITNESS", "TEACHER")  # families whose resumes rarely mention logistics


@pytest.fixture(scope="module")
def job(resumes_dir) -> str:
    """A real job of the HR study: its skill terms (logistics and warehouse work)."""
    pairs = pd.read_csv(resumes_dir / "job_resume_hr_scores.csv", dtype=str)
    return sorted(set(pairs.job_terms[pairs.job_terms.str.contains("warehouse management")]))[0]


@pytest.fixture(scope="module")
def resumes(resumes_dir) -> pd.DataFrame:
    return pd.read_csv(resumes_dir / "livecareer_resumes.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def candidates(resumes, job) -> list[str]:
    """Four long real resumes (one per family) that hold none of the job's terms: each spans several windows."""
    job_terms = set(terms(job))
    rows = resumes[resumes.category.isin(OTHER_FAMILIES) & (resumes.resume_text.str.len() > 4000)]
    rows = rows[[not (job_terms & set(terms(t))) for t in rows.resume_text]].sort_values("resume_id")
    return rows.groupby("category").head(1).resume_text.tolist()


@pytest.fixture(scope="module")
def passage(resumes) -> str:
    """~100 words of real warehouse work: from the first resume (by id) that mentions warehouse and logistics."""
    text = resumes[
        resumes.resume_text.str.contains("(?i)warehouse") & resumes.resume_text.str.contains("(?i)logistics")
    ]
    words = text.sort_values("resume_id").resume_text.iloc[0].split()
    at = next(i for i, w in enumerate(words) if "warehouse" in w.lower())
    return " ".join(words[max(0, at - 20) : at + 80])


@pytest.fixture(scope="module")
def corpus(resumes, candidates) -> list[str]:
    """What TF-IDF and BM25 are fitted on: 40 real resumes of every family, plus the candidates."""
    return resumes.sort_values("resume_id").resume_text.head(40).tolist() + candidates


@pytest.fixture(scope="module")
def fitted(corpus, job) -> dict[str, Matcher]:
    """One fitted matcher per kind; the embedding matcher's window cache is shared by the tests of this module."""
    return {kind: new_matcher(kind).fit([job], corpus) for kind in KINDS}


def skills_line(job: str) -> str:
    return "Skills: " + ", ".join(t.strip() for t in job.split(";"))


def test_candidates_are_long_and_lack_the_terms(candidates, job):
    # The fixture's premise: without it the ranking tests below would prove nothing.
    from finesieve.models.embedding_zero_shot import load_encoder

    tokenizer = load_encoder(None, "cpu").tokenizer
    assert len(candidates) == len(OTHER_FAMILIES)
    for text in candidates:
        assert not set(terms(job)) & set(terms(text))
        assert len(chunk_text(text, tokenizer, 200, 50)) >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_contract_shapes_and_determinism(fitted, corpus, candidates, job, kind):
    matcher = fitted[kind]
    assert isinstance(matcher, Matcher) and matcher.kind == kind
    jobs = [job, "teacher; curriculum; classroom", job]
    texts = [candidates[0], candidates[1], corpus[0]]
    scores = matcher.score_pairs(jobs, texts)
    assert scores.shape == (3,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, matcher.score_pairs(jobs, texts))  # same object, again
    again = new_matcher(kind).fit([job], corpus).score_pairs(jobs, texts)  # a new object, fitted alike
    np.testing.assert_allclose(again, scores, rtol=1e-6)
    # A pair's score does not depend on the other pairs of the call.
    np.testing.assert_allclose(matcher.score_pairs(jobs[1:2], texts[1:2]), scores[1:2], rtol=1e-6)
    assert matcher.score_pairs([], []).shape == (0,)
    with pytest.raises(ValueError, match="one job text per pair"):
        matcher.score_pairs([job], texts)
    with pytest.raises(TypeError, match="wrap it in a list"):
        matcher.score_pairs(job, texts[0])


@pytest.mark.parametrize("kind", ["tfidf", "bm25"])
def test_unfitted_matcher_says_to_fit(kind, job):
    matcher = new_matcher(kind)
    with pytest.raises(NotFittedError, match=f"{type(matcher).__name__} is not fitted"):
        matcher.score_pairs([job], ["a resume"])
    with pytest.raises(NotFittedError):
        matcher.save("unused")


@pytest.mark.parametrize("kind", KINDS)
def test_exact_terms_rank_a_resume_above_the_same_resume_without_them(fitted, candidates, job, kind):
    # One window each (the first 120 words of real resumes), with and without the job's skill terms.
    short = [" ".join(text.split()[:120]) for text in candidates]
    with_terms = [text + "\n" + skills_line(job) for text in short]
    scores = fitted[kind].score_pairs([job] * 8, [*short, *with_terms])
    without, with_ = scores[:4], scores[4:]
    assert (with_ > without).all()
    if kind != "embeddings":  # lexical: no shared term scores exactly 0, so any resume with the terms ranks above
        assert (without == 0).all() and with_.min() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_long_resume_matching_only_at_its_end_ranks_first(fitted, candidates, job, passage, kind):
    # Real warehouse work comes after several windows of unrelated text: a matcher that reads only the first window
    # (the encoder's 256 word pieces) cannot see it. Each such resume ranks above every resume without it.
    late = [text + "\n" + passage for text in candidates]
    scores = fitted[kind].score_pairs([job] * 8, [*candidates, *late])
    assert scores[4:].min() > scores[:4].max()


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_windows_beyond_the_first_decide_the_embedding_score(fitted, candidates, job, passage, pooling):
    late = candidates[0] + "\n" + passage
    matcher = EmbeddingMatcher(pooling=pooling)
    matcher._cache = fitted["embeddings"]._cache  # the same windows: reuse their vectors
    scores = matcher.score_pairs([job] * 5, [*candidates, late])
    assert int(np.argmax(scores)) == 4
    # Reading the first window only, the two resumes are one text: the test above would fail without chunking.
    first_only = EmbeddingMatcher(pooling=pooling, max_chunks=1).score_pairs([job] * 2, [candidates[0], late])
    assert first_only[0] == pytest.approx(first_only[1], abs=1e-6)


def test_embedding_windows_are_cached_per_text(fitted, candidates, job, monkeypatch):
    matcher = EmbeddingMatcher()
    matcher.score_pairs([job, job], candidates[:2])
    assert len(matcher._cache) == 3  # the job and two resumes, each once

    def no_encoder():
        raise AssertionError("texts already embedded were encoded again")

    monkeypatch.setattr(matcher, "_encoder", no_encoder)
    np.testing.assert_array_equal(
        matcher.score_pairs([job, job, job], [candidates[1], candidates[0], candidates[1]]),
        fitted["embeddings"].score_pairs([job, job, job], [candidates[1], candidates[0], candidates[1]]),
    )


def test_chunk_text_windows_overlap_cover_the_text_and_fit_the_encoder(candidates):
    from finesieve.models.embedding_zero_shot import load_encoder

    tokenizer = load_encoder(None, "cpu").tokenizer
    text = candidates[0]
    windows = chunk_text(text, tokenizer, 120, 30)
    starts = [text.index(w) for w in windows]  # each window is a verbatim span of the text
    assert starts[0] == 0 and starts[-1] + len(windows[-1]) == len(text.rstrip())
    for w in windows:
        assert len(tokenizer(w, add_special_tokens=False)["input_ids"]) <= 120
    for (s0, w0), s1 in zip(zip(starts, windows), starts[1:]):
        assert s0 < s1 < s0 + len(w0)  # moves forward and overlaps the previous window
        assert s1 == 0 or not text[s1 - 1].isalnum()  # starts at a word, never inside one
    assert chunk_text("short text", tokenizer, 120, 30) == ["short text"]
    assert len(chunk_text(text, tokenizer, 120, 30, max_chunks=2)) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_equal_scores(fitted, corpus, candidates, job, kind, tmp_path):
    matcher = fitted[kind]
    matcher.save(tmp_path / kind)
    loaded = load_matcher(tmp_path / kind)
    assert type(loaded) is type(matcher) and loaded.get_config() == matcher.get_config()
    pairs = ([job] * 4 + ["teacher; classroom"] * 2, [*candidates, corpus[0], corpus[1]])
    if kind == "embeddings":  # the same vectors up to float32 rounding: batches pad windows to other lengths
        np.testing.assert_allclose(loaded.score_pairs(*pairs), matcher.score_pairs(*pairs), rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(loaded.score_pairs(*pairs), matcher.score_pairs(*pairs))
    saved = json.loads((tmp_path / kind / MATCHER_FILE).read_text())
    assert saved["kind"] == kind and "finesieve_version" in saved
    other = next(cls for cls in (TfidfMatcher, Bm25Matcher, EmbeddingMatcher) if cls.kind != kind)
    with pytest.raises(ConfigError, match=f"holds a '{kind}' matcher"):
        other.load(tmp_path / kind)


def test_bm25_pair_scores_equal_rank_bm25_on_its_corpus(fitted, corpus, job):
    from rank_bm25 import BM25Okapi

    reference = BM25Okapi([terms(t) for t in corpus]).get_scores(terms(job))
    ours = fitted["bm25"].score_pairs([job] * len(corpus), corpus)
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
    assert (ours > 0).any()  # the job's terms occur in the corpus: the comparison is not 0 == 0


def test_tfidf_vocabulary_comes_from_the_resumes_only(corpus):
    matcher = TfidfMatcher().fit(["quuxification engineer"], corpus)
    assert "quuxification" not in matcher.vectorizer_.vocabulary_
    assert matcher.score_pairs(["quuxification"], [corpus[0] + " quuxification"])[0] == 0.0


def test_settings_are_checked_with_clear_errors():
    with pytest.raises(ConfigError, match="did you mean tfidf"):
        new_matcher("tfid")
    with pytest.raises(ConfigError, match="k1"):
        new_matcher("bm25", k1=-1)
    with pytest.raises(ValueError, match="overlap_tokens=200 is not below chunk_tokens=200"):
        EmbeddingMatcherConfig(chunk_tokens=200, overlap_tokens=200)
    with pytest.raises(ConfigError, match="chunk_tokens <= 254"):
        EmbeddingMatcher(chunk_tokens=300).score_pairs(["a job"], ["a resume"])
    with pytest.raises(DataError, match="no resumes"):
        TfidfMatcher().fit([], [])
    with pytest.raises(DataError, match="holds a word"):
        Bm25Matcher().fit([], ["", "!!"])
