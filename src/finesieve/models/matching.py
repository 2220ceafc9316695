"""Candidate-job matchers: one score per (job, resume) pair, higher = better fit, to rank a job's candidates.

    from finesieve.models.matching import TfidfMatcher, Bm25Matcher, EmbeddingMatcher, load_matcher, new_matcher
    matcher = TfidfMatcher().fit(jobs=job_texts, resumes=corpus)        # the vocabulary and IDF come from `resumes`
    scores = matcher.score_pairs(["python; sql; etl"], [resume_text])   # (1,) float64
    matcher.save("matchers/tfidf")
    load_matcher("matchers/tfidf").score_pairs(...)                     # equal scores
    new_matcher("embeddings", pooling="mean")                           # by name, as the CLI builds them

Every matcher speaks `Matcher`: `fit(jobs, resumes) -> self`, `score_pairs(job_texts, resume_texts) -> (n,)`,
`get_config()`, `save(directory)` and `load(directory)`. Three baselines, none trained on judged pairs:

- `TfidfMatcher`: cosine of TF-IDF vectors (word 1-2 grams, sublinear tf, English stop words dropped). The
  vocabulary and IDF are fitted on the resumes only: a term is informative when it is rare among candidates.
- `Bm25Matcher`: Okapi BM25 (`rank_bm25.BM25Okapi`). BM25 scores a query against the documents of a corpus: the
  IDF and the mean document length are the corpus's. `fit` builds the corpus from `resumes` and keeps only those
  statistics; `score_pairs` then scores each pair as if the resume were a document of that corpus (the formula of
  `BM25Okapi.get_scores`, so a resume of the corpus gets exactly its `get_scores` value, and a resume outside it is
  scored with the same statistics). A job term the corpus never saw weighs 0. Scores compare candidates of one
  job, not jobs with each other. Fit on the candidates you rank (or a larger pool of resumes like them).
- `EmbeddingMatcher`: zero-shot bi-encoder, the packaged all-MiniLM-L6-v2 by default (offline), or any
  sentence-transformers model id or folder. The encoder reads 256 word pieces at most, and resumes run to ~1,500,
  so each text is cut into windows of `chunk_tokens` word pieces overlapping by `overlap_tokens` (cut between
  words), every window is embedded, and the windows are pooled: `max` (the best cosine between the job and any one
  window, the default) or `mean` (the renormalised mean of the unit window vectors, against the job's). Window
  vectors are cached per text (sha256) inside the object. Nothing is fitted: `fit` only returns self.
  The defaults (200/50 word pieces, max) were chosen on livecareer family retrieval, validation part only
  (`evals.matching.evaluate_family_retrieval`, 24 family queries x 144 resumes): NDCG@10 0.714 for max 200/50,
  0.701 max 128/32, 0.679 max 254/64, 0.617 mean 200/50 (max - mean +0.097 [+0.033, +0.167] over families), and
  0.712 for the first window alone. Mean pooling dilutes the one section that matches (a title, a skills list)
  among the windows that do not; max keeps it and still reads the whole resume.

Saved matchers are a folder: `matcher.json` (kind, config, finesieve version) and the fitted state
(`tfidf_vectorizer.pkl`, a trusted self-written pickle as in `models.tfidf`; `bm25_state.json`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import finesieve
from finesieve.data.errors import ConfigError, DataError, config_error
from finesieve.models.base import check_is_fitted, check_texts

MATCHER_FILE = "matcher.json"
TFIDF_FILE = "tfidf_vectorizer.pkl"
BM25_FILE = "bm25_state.json"
# Words of 2+ characters, keeping the '+' and '#' of C++ and C# (lower-cased first); single letters say little.
_TERM = re.compile(r"[^\W_][\w+#]*[\w+#]", re.UNICODE)


@runtime_checkable
class Matcher(Protocol):
    """Scores (job, resume) pairs; one score per pair, higher = better fit."""

    kind: str  # the name in matcher.json and on the command line (MATCHER_KINDS)

    def fit(self, jobs: Sequence[str], resumes: Sequence[str]) -> Matcher: ...

    def score_pairs(self, job_texts: Sequence[str], resume_texts: Sequence[str]) -> np.ndarray: ...

    def get_config(self) -> BaseModel: ...

    def save(self, directory: str | Path) -> None: ...

    @classmethod
    def load(cls, directory: str | Path) -> Matcher: ...


# ----------------------------------------------------------------------------------------- shared helpers


def terms(text: str) -> list[str]:
    """The lower-cased words of `text` that TF-IDF and BM25 count, English stop words left out."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [t for t in _TERM.findall(text.lower()) if t not in ENGLISH_STOP_WORDS]


def check_pairs(job_texts: Sequence[str], resume_texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Both sides as lists of str, one job text per resume text."""
    jobs, resumes = check_texts(job_texts), check_texts(resume_texts)
    if len(jobs) != len(resumes):
        raise ValueError(
            f"{len(jobs)} job texts for {len(resumes)} resume texts: pass one job text per pair (repeat a job's "
            "text for each of its candidates)"
        )
    return jobs, resumes


def _unique(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, (n,) index of each text among them): each text is processed once."""
    index: dict[str, int] = {}
    positions = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    return list(index), positions


def _write_config(directory: Path, matcher) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": matcher.kind,
        "finesieve_version": finesieve.__version__,
        "config": matcher.get_config().model_dump(mode="json"),
    }
    (directory / MATCHER_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))


def _read_config(directory: str | Path, config_class: type[BaseModel], kind: str) -> BaseModel:
    path = Path(directory) / MATCHER_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: point at a folder written by a matcher's save()")
    payload = json.loads(path.read_text())
    if payload.get("kind") != kind:
        raise ConfigError(f"{path} holds a {payload.get('kind')!r} matcher, not {kind!r}: load it with load_matcher")
    try:
        return config_class.model_validate(payload.get("config", {}))
    except ValidationError as err:
        raise config_error(err, str(path), config_class) from None


def _check_corpus(resumes: Sequence[str], kind: str) -> list[str]:
    corpus = check_texts(resumes)
    if not corpus:
        raise DataError(f"{kind}: no resumes to fit on: pass the candidates (or a pool of resumes like them)")
    return corpus


# ----------------------------------------------------------------------------------------- TF-IDF


class TfidfMatcherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ngram_range: tuple[int, int] = Field((1, 2), description="Word n-gram range (job terms are often two words).")
    min_df: int = Field(1, ge=1, description="Ignore terms found in fewer resumes of the corpus.")
    max_df: float = Field(1.0, gt=0, le=1, description="Ignore terms found in more than this share of the resumes.")
    sublinear_tf: bool = Field(True, description="1 + log(tf): a term said ten times is not ten times the fit.")

    @model_validator(mode="after")
    def _check(self) -> TfidfMatcherConfig:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError(f"ngram_range={self.ngram_range}: expected 1 <= low <= high, e.g. (1, 2)")
        return self


class TfidfMatcher:
    """Cosine of TF-IDF vectors; the vocabulary and IDF are fitted on the resumes."""

    kind = "tfidf"

    def __init__(self, ngram_range=(1, 2), min_df=1, max_df=1.0, sublinear_tf=True):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_df = max_df
        self.sublinear_tf = sublinear_tf

    def get_config(self) -> TfidfMatcherConfig:
        return TfidfMatcherConfig(**{name: getattr(self, name) for name in TfidfMatcherConfig.model_fields})

    def fit(self, jobs: Sequence[str], resumes: Sequence[str]) -> TfidfMatcher:
        """Fit the vocabulary and IDF on `resumes`; `jobs` are the queries and stay out of the statistics."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        config = self.get_config()  # validates the settings before any work
        corpus = _check_corpus(resumes, "TfidfMatcher")
        vectorizer = TfidfVectorizer(
            tokenizer=terms,
            token_pattern=None,
            lowercase=False,  # `terms` lower-cases
            ngram_range=config.ngram_range,
            min_df=config.min_df,
            max_df=config.max_df,
            sublinear_tf=config.sublinear_tf,
            dtype=np.float32,
        )
        try:
            vectorizer.fit(corpus)
        except ValueError as err:  # every term pruned, or none at all
            raise DataError(
                f"TfidfMatcher: no terms left to fit on {len(corpus)} resume(s) ({err}): check the texts, or "
                "lower min_df / raise max_df"
            ) from None
        self.vectorizer_ = vectorizer
        return self

    def score_pairs(self, job_texts: Sequence[str], resume_texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "vectorizer_")
        jobs, resumes = check_pairs(job_texts, resume_texts)
        if not jobs:
            return np.zeros(0)
        unique_jobs, job_at = _unique(jobs)
        unique_resumes, resume_at = _unique(resumes)
        J = self.vectorizer_.transform(unique_jobs)  # (n_jobs, vocab), rows unit length (or 0)
        R = self.vectorizer_.transform(unique_resumes)  # (n_resumes, vocab)
        # Row-wise dot products of the paired rows: the cosine, since TfidfVectorizer's rows are L2-normalised.
        return np.asarray(J[job_at].multiply(R[resume_at]).sum(axis=1), dtype=float).ravel()

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self, "vectorizer_")
        directory = Path(directory)
        _write_config(directory, self)
        with open(directory / TFIDF_FILE, "wb") as fh:  # trusted, self-written artifact (as models.tfidf)
            pickle.dump(self.vectorizer_, fh)

    @classmethod
    def load(cls, directory: str | Path) -> TfidfMatcher:
        config = _read_config(directory, TfidfMatcherConfig, cls.kind)
        matcher = cls(**dict(config))
        with open(Path(directory) / TFIDF_FILE, "rb") as fh:
            matcher.vectorizer_ = pickle.load(fh)
        return matcher


# ----------------------------------------------------------------------------------------- BM25


class Bm25MatcherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k1: float = Field(1.5, ge=0, description="Term-frequency saturation: higher lets repeated terms count longer.")
    b: float = Field(0.75, ge=0, le=1, description="Length normalisation: 0 none, 1 full (by the corpus mean length).")
    epsilon: float = Field(
        0.25, ge=0, description="IDF floor, as a share of the mean IDF, for terms in more than half the resumes."
    )


class Bm25Matcher:
    """Okapi BM25 of the job's terms against each resume, with the IDF and mean length of the fitted corpus."""

    kind = "bm25"

    def __init__(self, k1=1.5, b=0.75, epsilon=0.25):
        self.k1 = k1
        self.b = b
        self.epsilon = epsilon

    def get_config(self) -> Bm25MatcherConfig:
        return Bm25MatcherConfig(**{name: getattr(self, name) for name in Bm25MatcherConfig.model_fields})

    def fit(self, jobs: Sequence[str], resumes: Sequence[str]) -> Bm25Matcher:
        """Build the BM25 corpus of `resumes` and keep its statistics (IDF per term, mean length in terms)."""
        try:
            from rank_bm25 import BM25Okapi
        except ImportError:
            raise ConfigError(
                "Bm25Matcher needs rank-bm25: pip install 'finesieve[resumes]' (or pip install rank-bm25)"
            ) from None
        config = self.get_config()
        tokenised = [terms(t) for t in _check_corpus(resumes, "Bm25Matcher")]
        if not any(tokenised):
            raise DataError(f"Bm25Matcher: none of the {len(tokenised)} resume(s) holds a word to index")
        bm25 = BM25Okapi(tokenised, k1=config.k1, b=config.b, epsilon=config.epsilon)
        self.idf_ = {term: float(v) for term, v in bm25.idf.items()}
        self.avgdl_ = float(bm25.avgdl)
        self.corpus_size_ = int(bm25.corpus_size)
        return self

    def score_pairs(self, job_texts: Sequence[str], resume_texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "idf_")
        jobs, resumes = check_pairs(job_texts, resume_texts)
        unique_jobs, job_at = _unique(jobs)
        unique_resumes, resume_at = _unique(resumes)
        queries = [terms(t) for t in unique_jobs]  # repeated query terms count each time, as in get_scores
        docs = [Counter(terms(t)) for t in unique_resumes]
        lengths = np.array([sum(d.values()) for d in docs], dtype=float)
        norm = self.k1 * (1 - self.b + self.b * lengths / self.avgdl_)  # (n_resumes,)
        scores = np.empty(len(jobs))
        for i, (j, r) in enumerate(zip(job_at, resume_at)):
            doc = docs[r]
            scores[i] = sum(
                self.idf_.get(q, 0.0) * doc[q] * (self.k1 + 1) / (doc[q] + norm[r]) for q in queries[j] if q in doc
            )
        return scores

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self, "idf_")
        directory = Path(directory)
        _write_config(directory, self)
        state = {"idf": self.idf_, "avgdl": self.avgdl_, "corpus_size": self.corpus_size_}
        (directory / BM25_FILE).write_text(json.dumps(state, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> Bm25Matcher:
        config = _read_config(directory, Bm25MatcherConfig, cls.kind)
        matcher = cls(**dict(config))
        state = json.loads((Path(directory) / BM25_FILE).read_text())
        matcher.idf_, matcher.avgdl_, matcher.corpus_size_ = state["idf"], state["avgdl"], state["corpus_size"]
        return matcher


# ----------------------------------------------------------------------------------------- embeddings


class EmbeddingMatcherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        description="Sentence-transformers model: a hub id (needs the network once), a local folder, or "
        "packaged:NAME; None is the packaged all-MiniLM-L6-v2, offline.",
    )
    chunk_tokens: int = Field(
        200, ge=8, description="Word pieces per window; with [CLS] and [SEP] it must fit the encoder (256 for MiniLM)."
    )
    overlap_tokens: int = Field(50, ge=0, description="Word pieces each window shares with the one before it.")
    max_chunks: int | None = Field(
        None, ge=1, description="Embed only the first N windows of a text (cheaper); None reads the whole text."
    )
    pooling: Literal["mean", "max"] = Field(
        "max",
        description="max: the best cosine of the job with any one window (the default: it ranked livecareer "
        "families better on the validation part); mean: cosine of the job with the mean of the window vectors.",
    )
    batch_size: int = Field(32, gt=0, description="Windows per encoding batch.")
    device: str = Field("cpu", description="Torch device for the encoder.")

    @model_validator(mode="after")
    def _check(self) -> EmbeddingMatcherConfig:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"overlap_tokens={self.overlap_tokens} is not below chunk_tokens={self.chunk_tokens}: the windows "
                "would not move forward; use an overlap of a quarter of the window, e.g. 50 for 200"
            )
        return self


def chunk_text(
    text: str, tokenizer, chunk_tokens: int, overlap_tokens: int, max_chunks: int | None = None
) -> list[str]:
    """`text` cut into windows of at most `chunk_tokens` word pieces (of `tokenizer`), each starting
    `overlap_tokens` before the previous one ends, cut between words so a word is never split. A text that fits
    is one window, itself."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoding["offset_mapping"]  # (n_tokens,) character spans
    n = len(offsets)
    if n <= chunk_tokens:
        return [text]
    word_ids = encoding.word_ids()
    starts = [t for t in range(n) if t == 0 or word_ids[t] != word_ids[t - 1]]  # tokens that begin a word
    is_start = np.zeros(n + 1, dtype=bool)
    is_start[starts] = True
    is_start[n] = True  # the end of the text is a boundary too

    def boundary_at_or_before(t: int, floor: int) -> int:
        """The last word boundary in (floor, t], or t when a single word is longer than the window."""
        b = t
        while b > floor and not is_start[b]:
            b -= 1
        return b if b > floor else t

    chunks, start = [], 0
    while True:
        end = boundary_at_or_before(min(start + chunk_tokens, n), start)
        chunks.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end >= n or (max_chunks is not None and len(chunks) >= max_chunks):
            return chunks
        start = max(boundary_at_or_before(end - overlap_tokens, start), start + 1)


class EmbeddingMatcher:
    """Zero-shot bi-encoder: cosine of pooled sentence embeddings of the job and of the resume's windows."""

    kind = "embeddings"

    def __init__(
        self,
        model: str | None = None,
        chunk_tokens: int = 200,
        overlap_tokens: int = 50,
        max_chunks: int | None = None,
        pooling: str = "max",
        batch_size: int = 32,
        device: str = "cpu",
    ):
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.max_chunks = max_chunks
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device

    def get_config(self) -> EmbeddingMatcherConfig:
        return EmbeddingMatcherConfig(**{name: getattr(self, name) for name in EmbeddingMatcherConfig.model_fields})

    def fit(self, jobs: Sequence[str], resumes: Sequence[str]) -> EmbeddingMatcher:
        """Nothing to learn (zero-shot): checks the settings and returns self."""
        self.get_config()
        return self

    def _encoder(self):
        from finesieve.models.embedding_zero_shot import load_encoder
        from finesieve.models.packaged import packaged_model_path

        model = self.model
        if model is not None and model.startswith("packaged:"):
            model = str(packaged_model_path(model.removeprefix("packaged:")))
        encoder = load_encoder(model, self.device)
        limit = int(encoder.max_seq_length) - 2  # [CLS] and [SEP] take two of the encoder's positions
        if self.chunk_tokens > limit:
            raise ConfigError(
                f"chunk_tokens={self.chunk_tokens} does not fit the encoder's {encoder.max_seq_length} positions: "
                f"use chunk_tokens <= {limit}, or the encoder truncates every window"
            )
        return encoder

    def chunk_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit-length window embeddings of each text, (n_windows, dim) float32; computed once per distinct text
        and kept in the object's cache (keyed by the text's sha256)."""
        config = self.get_config()
        cache: dict[str, np.ndarray] = self.__dict__.setdefault("_cache", {})
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
        todo = {k: t for k, t in zip(keys, texts) if k not in cache}
        if todo:
            encoder = self._encoder()
            windows = [
                chunk_text(t, encoder.tokenizer, config.chunk_tokens, config.overlap_tokens, config.max_chunks)
                for t in todo.values()
            ]
            flat = [w for ws in windows for w in ws]
            vectors = np.asarray(
                encoder.encode(
                    flat,
                    batch_size=config.batch_size,
                    show_progress_bar=False,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                ),
                dtype=np.float32,
            ).reshape(len(flat), -1)  # (n_windows_total, dim)
            bounds = np.cumsum([0, *(len(ws) for ws in windows)])
            for i, key in enumerate(todo):
                cache[key] = vectors[bounds[i] : bounds[i + 1]]
        return [cache[k] for k in keys]

    def score_pairs(self, job_texts: Sequence[str], resume_texts: Sequence[str]) -> np.ndarray:
        jobs, resumes = check_pairs(job_texts, resume_texts)
        if not jobs:
            return np.zeros(0)
        unique_jobs, job_at = _unique(jobs)
        unique_resumes, resume_at = _unique(resumes)
        J = np.stack([_mean_unit(v) for v in self.chunk_vectors(unique_jobs)])  # (n_jobs, dim)
        resume_windows = self.chunk_vectors(unique_resumes)
        if self.pooling == "mean":
            R = np.stack([_mean_unit(v) for v in resume_windows])  # (n_resumes, dim)
            return np.einsum("ij,ij->i", J[job_at], R[resume_at]).astype(float)
        # max: per distinct resume, the best window's cosine with every distinct job, (n_resumes, n_jobs)
        best = np.stack([(windows @ J.T).max(axis=0) for windows in resume_windows])
        return best[resume_at, job_at].astype(float)

    def save(self, directory: str | Path) -> None:
        """The config only: the encoder is the packaged or named model, and the cache is rebuilt on use."""
        _write_config(Path(directory), self)

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingMatcher:
        return cls(**dict(_read_config(directory, EmbeddingMatcherConfig, cls.kind)))


def _mean_unit(vectors: np.ndarray) -> np.ndarray:
    """The unit-length mean of (n, dim) unit vectors (the centroid's direction)."""
    mean = vectors.mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else mean


# ----------------------------------------------------------------------------------------- by name

MATCHER_KINDS: dict[str, type[TfidfMatcher] | type[Bm25Matcher] | type[EmbeddingMatcher]] = {
    TfidfMatcher.kind: TfidfMatcher,
    Bm25Matcher.kind: Bm25Matcher,
    EmbeddingMatcher.kind: EmbeddingMatcher,
}
CONFIGS: dict[str, type[BaseModel]] = {
    "tfidf": TfidfMatcherConfig,
    "bm25": Bm25MatcherConfig,
    "embeddings": EmbeddingMatcherConfig,
}


def new_matcher(name: str, **settings) -> Matcher:
    """An unfitted matcher of kind `name` (tfidf, bm25, embeddings) with `settings` checked against its config."""
    if name not in MATCHER_KINDS:
        import difflib

        close = difflib.get_close_matches(name, list(MATCHER_KINDS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"no matcher {name!r}{hint}: choose one of {', '.join(MATCHER_KINDS)}")
    try:
        config = CONFIGS[name].model_validate(settings)
    except ValidationError as err:
        raise config_error(err, f"{name} matcher settings", CONFIGS[name]) from None
    return MATCHER_KINDS[name](**dict(config))


def is_matcher_folder(path: str | Path) -> bool:
    return (Path(path) / MATCHER_FILE).is_file()


def load_matcher(directory: str | Path) -> Matcher:
    """The matcher saved in `directory`, of whatever kind its matcher.json names."""
    path = Path(directory) / MATCHER_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: point at a folder written by a matcher's save()")
    kind = json.loads(path.read_text()).get("kind")
    if kind not in MATCHER_KINDS:
        raise ConfigError(f"{path}: kind={kind!r} is not a matcher kind ({', '.join(MATCHER_KINDS)})")
    return MATCHER_KINDS[kind].load(directory)
