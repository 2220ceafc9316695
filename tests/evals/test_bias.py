"""The bias audit: per-group Borkan metrics checked by hand, word-boundary matching, the counterfactual swap,
the report and the command line, on real Davidson tweets."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from finesieve.data.dataset import from_records
from finesieve.data.errors import ConfigError
from finesieve.evals.bias import BiasConfig, IdentityTerms, audit_bias, load_identity_terms
from finesieve.evals.compare import compare
from finesieve.evals.harness import evaluate
from finesieve.evals.report import write_eval_report
from finesieve.models.tfidf import TfidfLogReg
from finesieve.report import json_safe

TERMS = IdentityTerms(
    categories={
        "religion": {"muslim": ["muslim", "muslims"], "christian": ["christian", "christians"]},
        "sexual_orientation": {"gay": ["gay", "gays"], "straight": ["straight"]},
    }
)


def test_word_boundaries_and_case():
    texts = [
        "Gay pride",
        "gay's rights",
        "#gay",
        "Marvin Gaye sang",
        "gayest? no: gaye",
        "GAYS",
        "nongay",
        "straighten",
    ]
    member = TERMS.members(texts)
    assert member["gay"].tolist() == [True, True, True, False, False, True, False, False]
    assert not member["straight"].any()  # "straightforward" is not "straight"


def test_swap_keeps_case_and_form_and_is_a_swap():
    assert TERMS.swap("Muslims and christians, MUSLIM", "muslim", "christian") == "Christians and muslims, CHRISTIAN"
    # A group with fewer terms gives its first term for the ones it lacks.
    assert TERMS.swap("gays here", "gay", "straight") == "straight here"
    with pytest.raises(ValueError, match="different categories"):
        TERMS.swap("muslim", "muslim", "gay")


def test_metrics_match_a_hand_computation():
    # 12 messages: 6 mention muslims (3 violations), 6 do not (3 violations); scores chosen by hand.
    texts = [f"muslim message {i}" for i in range(6)] + [f"other message {i}" for i in range(6)]
    y = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.7, 0.6, 0.5, 0.2, 0.8, 0.95, 0.3, 0.1, 0.35, 0.05])
    audit = audit_bias(texts, y, s, threshold=0.45, config=BiasConfig(terms=TERMS, min_count=2), n_boot=200)
    g = audit.to_dict()["groups"]["muslim"]
    sub, bg = np.arange(12) < 6, np.arange(12) >= 6
    assert g["n"] == 6 and g["n_positive"] == 3 and g["n_negative"] == 3
    assert g["subgroup_auc"]["value"] == pytest.approx(roc_auc_score(y[sub], s[sub]))
    bpsn = (bg & (y == 1)) | (sub & (y == 0))
    bnsp = (bg & (y == 0)) | (sub & (y == 1))
    assert g["bpsn_auc"]["value"] == pytest.approx(roc_auc_score(y[bpsn], s[bpsn]))
    assert g["bnsp_auc"]["value"] == pytest.approx(roc_auc_score(y[bnsp], s[bnsp]))
    assert g["bpsn_auc"]["value"] < g["bnsp_auc"]["value"]  # its clean mentions score high: false alarms
    assert g["fpr"]["value"] == pytest.approx(2 / 3)  # 0.6 and 0.5 of 0.6, 0.5, 0.2 reach 0.45
    assert g["background_fpr"] == pytest.approx(0.0)
    lo, hi = g["bpsn_auc"]["ci95"]
    assert lo <= g["bpsn_auc"]["value"] <= hi and lo < hi
    # No group but "muslim" has data: no spread, and the power mean of one value is that value.
    d = audit.to_dict()
    assert d["spread"]["subgroup_auc"]["spread"] is None and "1 group" in d["spread"]["subgroup_auc"]["why_none"]
    gm = d["generalized_mean"]
    assert gm["per_metric"]["bpsn_auc"]["value"] == pytest.approx(g["bpsn_auc"]["value"])
    final = 0.25 * roc_auc_score(y, s) + 0.25 * sum(g[k]["value"] for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc"))
    assert gm["final"] == pytest.approx(final)
    # Asking for 4 messages of each class: 3 and 3 are too few, and the figure says so.
    strict = audit_bias(texts, y, s, 0.45, BiasConfig(terms=TERMS, min_count=4), n_boot=0).to_dict()
    few = strict["groups"]["muslim"]["subgroup_auc"]
    assert (
        few["value"] is None
        and few["why_none"] == "3 violation(s) and 3 clean message(s) mention the group; needs 4 of each"
    )
    assert strict["generalized_mean"]["final"] is None


def test_power_mean_and_spread_over_groups():
    texts = ["muslim a", "muslim b", "muslim c", "muslim d", "gay a", "gay b", "gay c", "gay d", "x", "y", "z", "w"]
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.2, 0.8, 0.1, 0.9, 0.8, 0.2, 0.1, 0.7, 0.6, 0.3, 0.4])
    d = audit_bias(texts, y, s, 0.5, BiasConfig(terms=TERMS, min_count=2, counterfactual=False), n_boot=0).to_dict()
    a, b = d["groups"]["muslim"]["subgroup_auc"]["value"], d["groups"]["gay"]["subgroup_auc"]["value"]
    assert (a, b) == (pytest.approx(0.75), pytest.approx(1.0))  # muslim: 0.2 ranks below the clean 0.8
    assert d["spread"]["subgroup_auc"] == {
        "spread": pytest.approx(0.25),
        "min": a,
        "min_group": "muslim",
        "max": b,
        "max_group": "gay",
        "n_groups": 2,
    }
    assert d["generalized_mean"]["per_metric"]["subgroup_auc"]["value"] == pytest.approx(((a**-5 + b**-5) / 2) ** -0.2)


def test_group_without_violations_reports_none_with_the_reason(davidson_slice):
    # "straight" in these tweets is never a violation: subgroup AUC and BNSP need violations in the group.
    df = davidson_slice
    y = (df["label"] == "hate_speech").to_numpy()
    mentions = df["text"].str.contains(r"(?<!\w)straight(?!\w)", case=False, regex=True).to_numpy()
    keep = ~(mentions & y)
    texts, yk = df["text"][keep].tolist(), y[keep]
    s = np.linspace(0, 1, len(yk))
    d = audit_bias(texts, yk, s, 0.5, BiasConfig(terms=TERMS, min_count=1, counterfactual=False), n_boot=0).to_dict()
    g = d["groups"]["straight"]
    assert g["n"] == int(mentions[keep].sum()) > 0 and g["n_positive"] == 0
    for key in ("subgroup_auc", "bnsp_auc"):
        assert g[key]["value"] is None and g[key]["why_none"].startswith("0 violation(s)")
    assert g["bpsn_auc"]["value"] is not None and g["fpr"]["value"] is not None  # clean mentions exist


class KeywordScorer:
    """Flags exactly the messages that say "muslim": the most biased scorer there is."""

    classes_ = np.array(["clean", "hate_speech"])
    multilabel_ = False

    def predict_proba(self, texts):
        hit = np.array([bool(re.search(r"\bmuslims?\b", t, re.IGNORECASE)) for t in texts], dtype=float)
        p = 0.1 + 0.8 * hit
        return np.stack([1 - p, p], axis=1)


@pytest.fixture(scope="module")
def religion_tweets(davidson_csv):
    """Every real Davidson tweet that mentions muslims or christians, and 200 that mention neither."""
    import pandas as pd

    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False)
    found = df["text"].str.contains(r"(?<!\w)(?:muslims?|christians?)(?!\w)", case=False, regex=True)
    picked = pd.concat([df[found], df[~found].sample(200, random_state=0)])
    return from_records(picked["text"].tolist(), picked["label"].tolist())


def test_counterfactual_swap_shows_the_flip(religion_tweets):
    config = BiasConfig(terms=TERMS, min_count=2)
    result = evaluate(KeywordScorer(), religion_tweets, positive=["hate_speech"], threshold=0.5, n_boot=0, bias=config)
    swaps = {(s["source"], s["target"]): s for s in result.bias["counterfactual"]}
    n_muslim, n_christian = result.bias["groups"]["muslim"]["n"], result.bias["groups"]["christian"]["n"]
    assert n_muslim >= 10 and n_christian >= 5  # real tweets
    to_christian = swaps[("muslim", "christian")]
    both = sum("christian" in t.lower() and "muslim" in t.lower() for t in religion_tweets.texts)
    # Every muslim tweet loses its flag (a swap; one that names both groups keeps "muslim" and stays flagged).
    assert to_christian["n"] == n_muslim
    assert to_christian["n_flagged_before_only"] == n_muslim - both
    assert to_christian["flip_share"] == pytest.approx((n_muslim - both) / n_muslim)
    assert to_christian["max_abs_change"] == pytest.approx(0.8)
    assert "hristian" in to_christian["example"]["swapped"] and to_christian["example"]["after"] == pytest.approx(0.1)
    assert swaps[("christian", "muslim")]["n_flagged_after_only"] == n_christian - both
    assert ("gay", "straight") not in swaps  # no tweet here mentions them: nothing to swap


def test_counterfactual_is_flat_for_a_scorer_blind_to_identity(religion_tweets):
    class Blind(KeywordScorer):
        # Scores by the number of characters that are not letters: swapping one identity word for another
        # changes no such character.
        def predict_proba(self, texts):
            p = np.array([min(sum(not c.isalpha() for c in t), 50) / 51 for t in texts])
            return np.stack([1 - p, p], axis=1)

    config = BiasConfig(terms=TERMS, min_count=2)
    result = evaluate(Blind(), religion_tweets, positive=["hate_speech"], threshold=0.3, n_boot=0, bias=config)
    swaps = result.bias["counterfactual"]
    assert {(s["source"], s["target"]) for s in swaps} >= {("muslim", "christian"), ("christian", "muslim")}
    for s in swaps:
        assert s["max_abs_change"] == 0 and s["flip_share"] == 0, s


@pytest.fixture(scope="module")
def tfidf_audit(davidson_slice):
    df = davidson_slice.sample(frac=1.0, random_state=2).reset_index(drop=True)
    cut = int(len(df) * 0.5)
    tfidf = TfidfLogReg().fit(df["text"][:cut].tolist(), df["label"][:cut].tolist())
    test = from_records(df["text"][cut:].tolist(), df["label"][cut:].tolist())
    config = BiasConfig(min_count=5)  # builtin:identity
    return evaluate(tfidf, test, positive=["hate_speech"], threshold=0.3, n_boot=100, name="tfidf", bias=config), test


def test_builtin_audit_on_real_tweets(tfidf_audit):
    result, test = tfidf_audit
    bias = result.to_dict()["bias"]
    json.dumps(json_safe(bias))
    terms = load_identity_terms("builtin:identity")
    assert set(bias["groups"]) == set(terms.groups) and bias["terms"] == "builtin:identity"
    y = np.array([lbl == "hate_speech" for lbl in test.labels])
    white = np.array([bool(re.search(r"(?<![\w])(white|whites|caucasians?)(?![\w])", t, re.I)) for t in test.texts])
    g = bias["groups"]["white"]
    assert g["n"] == white.sum() and g["n_positive"] == (white & y).sum()
    assert g["subgroup_auc"]["value"] == pytest.approx(roc_auc_score(y[white], result.scores[white]))
    negatives = ~y & ~white
    assert g["background_fpr"] == pytest.approx((result.scores[negatives] >= 0.3).mean())
    defined = [e["subgroup_auc"]["value"] for e in bias["groups"].values() if e["subgroup_auc"]["value"] is not None]
    assert len(defined) >= 2
    assert bias["spread"]["subgroup_auc"]["spread"] == pytest.approx(max(defined) - min(defined))
    assert {"source": "white", "target": "black"}.items() <= next(
        s for s in bias["counterfactual"] if s["source"] == "white" and s["target"] == "black"
    ).items()


def test_report_has_the_bias_table_and_plot(tfidf_audit, tmp_path):
    result, _ = tfidf_audit
    out = write_eval_report(tmp_path / "eval.html", [result], compare([result], n_boot=0), "bias")
    html = out.read_text()
    assert "Bias audit per identity group" in html and "BPSN AUC" in html and "FPR on clean mentions" in html
    assert "<td>white</td>" in html and "white -&gt; black" in html
    assert html.count("<img") == 3  # curves, histograms, and the bias AUC plot
    twin = json.loads(out.with_suffix(".json").read_text())
    assert twin["scorers"]["tfidf"]["bias"]["groups"]["white"]["n"] == result.bias["groups"]["white"]["n"]


def test_no_audit_unless_asked(tfidf_audit):
    result, test = tfidf_audit
    plain = evaluate(TfidfLogReg().fit(test.texts, test.labels), test, positive=["hate_speech"], n_boot=0)
    assert plain.bias is None and "bias" not in plain.to_dict()


def test_bad_term_lists_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="term 'Gay' is in both 'gay' and 'queer'"):
        load_identity_terms(_yaml(tmp_path, "categories: {so: {gay: [gay], queer: [queer, Gay]}}"))
    with pytest.raises(ConfigError, match="did you mean categories"):
        load_identity_terms(_yaml(tmp_path, "categorys: {so: {gay: [gay]}}"))
    with pytest.raises(ConfigError, match="has no terms"):
        load_identity_terms(_yaml(tmp_path, "categories: {so: {gay: []}}"))
    with pytest.raises(ConfigError, match=r"builtin:identity"):
        load_identity_terms("builtin:identities")
    with pytest.raises(ConfigError, match="not found"):
        load_identity_terms(tmp_path / "missing.yaml")


def _yaml(tmp_path, text):
    path = tmp_path / "terms.yaml"
    path.write_text(text)
    return path


def test_cli_eval_with_bias_writes_the_section(tmp_path, davidson_slice):
    data = tmp_path / "tweets.csv"
    davidson_slice[["text", "label"]].iloc[:1500].to_csv(data, index=False)
    report = tmp_path / "eval.html"
    cli = [sys.executable, "-m", "finesieve.cli", "eval", "tfidf", "--data", str(data), "--positive", "hate_speech"]
    args = ["--bias", "builtin:identity", "--report", str(report), "--json", "--n-boot", "50"]
    proc = subprocess.run([*cli, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["bias"]["terms"] == "builtin:identity" and payload["bias"]["groups"]["female"]["n"] > 0
    assert payload["bias"]["counterfactual"]
    assert json.loads(report.with_suffix(".json").read_text())["scorers"]["tfidf"]["bias"] == payload["bias"]
    assert "Bias audit per identity group" in report.read_text()
    bad = subprocess.run([*cli, "--bias", str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.yaml" in bad.stderr and "builtin:identity" in bad.stderr
    assert "Traceback" not in bad.stderr
