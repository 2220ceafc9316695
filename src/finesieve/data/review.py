"""The data review: what a person should read before anything is trained on a labelled file.

    finesieve data review messages.csv --out review.html

Class balance, text lengths, exact and near duplicates (and leakage across a split, when one is given),
personal data found by redaction, random examples per class, and suspected label noise: near-duplicates
carrying different labels, messages whose label a cross-validated TF-IDF model strongly disputes, and,
when several annotators voted on each message, how often they agreed and the most disputed messages.
Suspected noise is shown for a person to judge; nothing is removed or relabelled here.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from finesieve import report as R
from finesieve.data.dataset import Dataset
from finesieve.data.dedupe import check_leakage, find_duplicates
from finesieve.outputs import write_text
from finesieve.report import json_safe

EXAMPLES_PER_CLASS = 5
NOISE_EXAMPLES = 20


def _label_key(labels: tuple) -> str:
    return "|".join(labels) if labels else "(none)"


def suspected_label_noise(dataset: Dataset, folds: int = 3, seed: int = 0, min_confidence: float = 0.9) -> list[dict]:
    """Messages whose given label gets low out-of-fold probability while another class gets high.

    A light word-n-gram model is fitted on k-1 folds and scores the held-out fold, so no message is judged by
    a model that saw its own label. Single-label data only.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from finesieve.data.normalize import normalize_for_scoring

    if dataset.multilabel or len(dataset) < 50:
        return []
    labels = np.array(dataset.labels)
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() < folds:
        return []
    texts = [normalize_for_scoring(t) for t in dataset.texts]
    oof = np.zeros((len(texts), len(dataset.classes)))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, labels):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        X = vec.fit_transform([texts[i] for i in train_idx])
        model = LogisticRegression(C=4.0, max_iter=1000).fit(X, labels[train_idx])
        cols = [dataset.classes.index(c) for c in model.classes_]
        oof[np.ix_(test_idx, cols)] = model.predict_proba(vec.transform([texts[i] for i in test_idx]))
    given = np.array([dataset.classes.index(lbl) for lbl in labels])
    p_given = oof[np.arange(len(texts)), given]
    top = oof.argmax(axis=1)
    suspect = np.flatnonzero((top != given) & (oof.max(axis=1) >= min_confidence))
    suspect = suspect[np.argsort(p_given[suspect])]
    return [
        {
            "id": dataset.frame["id"].iat[i],
            "row": int(dataset.frame["row"].iat[i]),
            "text": dataset.texts[i],
            "label": labels[i],
            "model_says": dataset.classes[top[i]],
            "p_model": float(oof[i, top[i]]),
            "p_label": float(p_given[i]),
        }
        for i in suspect
    ]


def annotator_agreement(dataset: Dataset) -> dict | None:
    """How far annotators agreed, per class of the majority label, from the vote columns (None without them).

    The share of votes the majority label got is the item's agreement; low agreement marks hard or noisy
    messages, which is what soft-label training (`soft_labels`) learns from.
    """
    shares = dataset.vote_shares()
    if shares is None:
        return None
    has = ~np.isnan(shares).any(axis=1)
    labels = np.array(dataset.labels)
    given = np.array([dataset.classes.index(lbl) for lbl in labels])
    agreement = np.where(has, shares[np.arange(len(labels)), given], np.nan)
    per_class = {}
    for j, c in enumerate(dataset.classes):
        a = agreement[(given == j) & has]
        per_class[c] = {
            "n": int(a.size),
            "mean_agreement": float(a.mean()) if a.size else None,
            "share_unanimous": float((a >= 1 - 1e-9).mean()) if a.size else None,
        }
    disputed = np.flatnonzero(has)
    disputed = disputed[np.argsort(agreement[disputed], kind="stable")][:NOISE_EXAMPLES]
    return {
        "n_with_votes": int(has.sum()),
        "share_unanimous": float((agreement[has] >= 1 - 1e-9).mean()) if has.any() else None,
        "per_class": per_class,
        "most_disputed": [
            {
                "row": int(dataset.frame["row"].iat[i]),
                "label": labels[i],
                "agreement": float(agreement[i]),
                "votes": dict(zip(dataset.classes, shares[i].round(3).tolist())),
                "text": dataset.texts[i],
            }
            for i in disputed
        ],
        "_agreement": agreement[has],
        "_given": given[has],
    }


def review(
    dataset: Dataset,
    *,
    split=None,
    corner_sets: dict[str, Dataset] | None = None,
    seed: int = 0,
    near_dup_threshold: float = 0.8,
    noise_check: bool = True,
) -> dict:
    """Compute the review. `split`: a per-row array of split names, to check leakage across it."""
    n = len(dataset)
    counts = dataset.class_counts()
    lengths = dataset.frame["text_raw"].str.len().to_numpy()
    dupes = find_duplicates(dataset.texts, threshold=near_dup_threshold)
    key_labels = [_label_key(t) for t in dataset.frame["labels"]]
    conflicts = dupes.conflicting_label_clusters(key_labels)
    rng = np.random.default_rng(seed)
    examples = {}
    for c in dataset.classes:
        idx = np.flatnonzero([c in t for t in dataset.frame["labels"]])
        pick = rng.choice(idx, size=min(EXAMPLES_PER_CLASS, len(idx)), replace=False) if len(idx) else []
        examples[c] = [dataset.texts[i] for i in pick]
    with_pii = dataset.frame["text"].str.contains(r"<(?:EMAIL|PHONE|URL|HANDLE|ADDRESS|CARD)>", regex=True)
    out = {
        "source": dataset.source,
        "n": n,
        "data_hash": dataset.content_hash,
        "rejected": dataset.rejected.to_dict(),
        "classes": dataset.classes,
        "multilabel": dataset.multilabel,
        "class_counts": counts,
        "class_share": {c: counts[c] / n for c in counts},
        "length_chars": {
            q: float(np.percentile(lengths, p))
            for q, p in (("min", 0), ("p05", 5), ("median", 50), ("p95", 95), ("max", 100))
        },
        "duplicates": dupes.to_dict(),
        "conflicting_label_clusters": [
            [
                {"row": int(dataset.frame["row"].iat[i]), "label": key_labels[i], "text": dataset.texts[i]}
                for i in cluster
            ]
            for cluster in conflicts[:NOISE_EXAMPLES]
        ],
        "n_conflicting_label_clusters": len(conflicts),
        "personal_data": {
            "counts": dataset.redaction_counts,
            "messages_with_any": int(with_pii.sum()),
            "share_with_any": float(with_pii.mean()),
        },
        "examples": examples,
        "corner_sets": {
            name: {"n": len(ds), "class_counts": ds.class_counts()} for name, ds in (corner_sets or {}).items()
        },
    }
    if split is not None:
        report = check_leakage(dupes.cluster_ids, np.asarray(split), texts=dataset.texts)
        out["leakage"] = {"n_leaking_clusters": report.n_leaking_clusters, "examples": report.examples}
    noise = suspected_label_noise(dataset, seed=seed) if noise_check else []
    out["n_model_disputed_labels"] = len(noise)
    out["model_disputed_labels"] = noise[:NOISE_EXAMPLES]
    agreement = annotator_agreement(dataset)
    if agreement is not None:
        out["annotator_agreement"] = {k: v for k, v in agreement.items() if not k.startswith("_")}
        out["_agreement"], out["_agreement_given"] = agreement["_agreement"], agreement["_given"]
    out["_lengths"] = lengths  # for the plots; dropped from JSON
    return out


def summary_lines(result: dict) -> list[str]:
    """A short plain-text summary for the terminal."""
    n = result["n"]
    lines = [f"Data review of {result['source']}: {n:,} messages accepted, {result['rejected']['total']:,} rejected"]
    lines.append("  classes: " + ", ".join(f"{c} {k:,} ({k / n:.1%})" for c, k in result["class_counts"].items()))
    q = result["length_chars"]
    lines.append(f"  length (chars): median {q['median']:.0f}, 95% under {q['p95']:.0f}, max {q['max']:.0f}")
    d = result["duplicates"]
    lines.append(
        f"  duplicates: {d['n_exact_dupes']:,} exact repeats, {d['n_near_dupe_rows']:,} rows in "
        f"{len(d['clusters']):,} near-duplicate clusters; {result['n_conflicting_label_clusters']:,} clusters "
        "carry conflicting labels"
    )
    if "leakage" in result:
        lines.append(f"  leakage across the split: {result['leakage']['n_leaking_clusters']} clusters straddle it")
    pii = result["personal_data"]
    found = ", ".join(f"{k} {v:,}" for k, v in sorted(pii["counts"].items())) or "none"
    lines.append(f"  personal data redacted: {found}; {pii['share_with_any']:.1%} of messages had some")
    lines.append(
        f"  suspected label noise: {result['n_model_disputed_labels']:,} labels disputed by a cross-validated model "
        "(shown for review, nothing removed)"
    )
    if "annotator_agreement" in result:
        a = result["annotator_agreement"]
        lines.append(
            f"  annotators: {a['share_unanimous']:.1%} of {a['n_with_votes']:,} messages unanimous; mean agreement "
            + ", ".join(
                f"{c} {v['mean_agreement']:.2f}" for c, v in a["per_class"].items() if v["mean_agreement"] is not None
            )
        )
    return lines


def _plots(result: dict, dataset: Dataset) -> tuple[str, str]:
    fig, ax = plt.subplots(figsize=(6, 3))
    counts = result["class_counts"]
    ax.barh(list(counts), list(counts.values()))
    ax.set(xlabel="messages", title="Class balance")
    balance = R.figure(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    lengths = result["_lengths"]
    bins = np.linspace(0, np.percentile(lengths, 99.5) + 1, 50)
    for c in dataset.classes:
        mask = np.array([c in t for t in dataset.frame["labels"]])
        ax.hist(lengths[mask], bins=bins, alpha=0.5, density=True, label=c)
    ax.set(xlabel="characters", title="Length distribution per class")
    ax.legend(fontsize=8)
    return balance, R.figure(fig)


def write_review(result: dict, dataset: Dataset, path: str | Path) -> Path:
    balance, lengths = _plots(result, dataset)
    d = result["duplicates"]
    pii = result["personal_data"]
    rejected = result["rejected"]
    sections = [
        R.section("Summary", "".join(R.paragraph(line) for line in summary_lines(result))),
        R.section(
            "Rejected rows",
            R.table(["problem", "rows"], sorted(rejected["counts"].items()))
            if rejected["counts"]
            else R.paragraph("none"),
            R.table(
                ["file", "row", "column", "problem", "value", "fix"],
                [[e["file"], e["row"], e["column"], e["problem"], e["value"], e["fix"]] for e in rejected["examples"]],
            )
            if rejected["examples"]
            else "",
        ),
        R.section(
            "Class balance",
            balance,
            R.table(
                ["class", "messages", "share"],
                [[c, k, result["class_share"][c]] for c, k in result["class_counts"].items()],
            ),
        ),
        R.section(
            "Lengths", lengths, R.table(list(result["length_chars"]), [list(result["length_chars"].values())], digits=0)
        ),
        R.section(
            "Duplicates and leakage",
            R.paragraph(
                f"{d['n_exact_dupes']:,} exact repeats; {d['n_near_dupe_rows']:,} rows in {len(d['clusters']):,} "
                "near-duplicate clusters (MinHash over character shingles). finesieve's splits keep every "
                "cluster inside one split, so near-duplicates never straddle train and test."
            ),
            R.table(["cluster size", "example"], [[len(c), dataset.texts[c[0]][:120]] for c in d["clusters"][:10]]),
            R.paragraph(f"Leakage across the given split: {result['leakage']['n_leaking_clusters']} clusters")
            if "leakage" in result
            else "",
        ),
        R.section(
            "Personal data",
            R.paragraph(
                f"{pii['messages_with_any']:,} messages ({pii['share_with_any']:.1%}) contained personal data, replaced by typed "
                "placeholders before anything is stored or trained."
            ),
            R.table(["entity", "found"], sorted(pii["counts"].items())),
        ),
        R.section(
            "Random examples per class (redacted)",
            "".join(
                f"<h3>{R.esc(c)}</h3>" + R.table(["text"], [[t] for t in ex]) for c, ex in result["examples"].items()
            ),
        ),
        R.section(
            "Suspected label noise",
            R.paragraph(
                "Shown for a reviewer to judge; nothing is removed, and the frozen test and corner-case sets "
                "are never edited from here.",
                "note",
            ),
            f"<h3>Near-duplicates with different labels ({result['n_conflicting_label_clusters']:,} clusters)</h3>",
            R.table(
                ["row", "label", "text"],
                [
                    [m["row"], m["label"], m["text"][:140]]
                    for cluster in result["conflicting_label_clusters"][:10]
                    for m in cluster
                ],
            ),
            f"<h3>Labels disputed by a cross-validated model ({result['n_model_disputed_labels']:,})</h3>",
            R.table(
                ["row", "label", "model says", "p(model)", "p(label)", "text"],
                [
                    [m["row"], m["label"], m["model_says"], m["p_model"], m["p_label"], m["text"][:140]]
                    for m in result["model_disputed_labels"]
                ],
            ),
        ),
    ]
    if "annotator_agreement" in result:
        a = result["annotator_agreement"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        bins = np.linspace(0, 1, 21)
        for j, c in enumerate(dataset.classes):
            values = result["_agreement"][result["_agreement_given"] == j]
            if values.size:
                ax.hist(values, bins=bins, alpha=0.5, label=c)
        ax.set(
            xlabel="share of annotators' votes for the majority label",
            ylabel="messages",
            title="Annotator agreement per majority label",
        )
        ax.legend(fontsize=8)
        sections.append(
            R.section(
                "Annotator agreement",
                R.paragraph(
                    "Messages the annotators split on are hard or noisy. Fine-tuning with --vote-col and "
                    "--soft-labels learns from the vote shares, so a split vote teaches less certainty than a "
                    "unanimous one.",
                    "note",
                ),
                R.figure(fig),
                R.table(
                    ["majority label", "messages", "mean agreement", "unanimous"],
                    [[c, v["n"], v["mean_agreement"], v["share_unanimous"]] for c, v in a["per_class"].items()],
                ),
                "<h3>Most disputed messages</h3>",
                R.table(
                    ["row", "label", "agreement", "votes", "text"],
                    [
                        [m["row"], m["label"], m["agreement"], json.dumps(m["votes"]), m["text"][:140]]
                        for m in a["most_disputed"]
                    ],
                ),
            )
        )
    if result["corner_sets"]:
        sections.append(
            R.section(
                "Corner-case sets",
                R.table(
                    ["set", "messages", "classes"],
                    [[k, v["n"], json.dumps(v["class_counts"])] for k, v in result["corner_sets"].items()],
                ),
            )
        )
    out = R.write_page(
        path, "finesieve data review", sections, subtitle=f"{result['source']} · data hash {result['data_hash'][:12]}"
    )
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    write_text(Path(out).with_suffix(".json"), json.dumps(json_safe(clean), indent=2, default=str))
    return out
