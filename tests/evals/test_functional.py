"""The functional test suite: the built-in hate-speech suite as written, user suites (YAML, CSV, JSONL) and their
errors, the per-functionality breakdown checked by hand, and a TF-IDF scorer fitted on real Davidson tweets
measured on the suite end to end."""

import json
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml

from finesieve.data.errors import ConfigError, DataError
from finesieve.data.preprocess import PreparedTexts, Preprocessing, prepare, prepare_for
from finesieve.data.redact import RedactionConfig
from finesieve.evals import metrics as M
from finesieve.evals.bias import load_identity_terms
from finesieve.evals.functional import (
    FUNCTIONALITY_COL,
    TARGET_COL,
    builtin_suites,
    functional_breakdown,
    load_functional_suite,
)
from finesieve.evals.metrics import wilson_interval
from finesieve.models.tfidf import TfidfLogReg
from finesieve.monitor.slow_evals import wilson

DAVIDSON_CLASSES = {"hate_speech", "offensive", "neither"}
GROUPS = {"female", "black", "muslim", "jewish", "gay", "transgender", "immigrant", "disabled"}


@pytest.fixture(scope="module")
def suite():
    return load_functional_suite("builtin:hate_speech")


@pytest.fixture(scope="module")
def written():
    """The built-in suite's YAML as written, before expansion."""
    text = (resources.files("finesieve.evals") / "functional_hate_speech.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


# ----------------------------------------------------------------------------------------------- the built-in suite


def test_builtin_suite_loads_as_a_dataset_with_functionality_and_target(suite):
    assert builtin_suites() == ["builtin:hate_speech"]
    assert suite.source == "builtin:hate_speech"
    assert list(suite.frame.columns) == ["id", "row", "text_raw", "text", "labels", FUNCTIONALITY_COL, TARGET_COL]
    assert suite.spec.meta_cols == (FUNCTIONALITY_COL, TARGET_COL)
    assert suite.classes == ["hate_speech", "offensive", "neither"]
    assert 900 <= len(suite) <= 1200
    assert suite.frame["id"].is_unique
    # Hateful and clean cases in like numbers, so accuracy is not won by always or never flagging.
    y = suite.violation(["hate_speech"])
    assert 0.4 < y.mean() < 0.6
    # The same suite hashes the same; the id names functionality and target, so a retag changes the hash.
    assert load_functional_suite().content_hash == suite.content_hash
    assert suite.frame["id"][0] == "derogation:female:t01"


def test_every_functionality_has_a_case_per_template_and_group(suite, written):
    groups = written["groups"]
    assert set(groups) == GROUPS
    counts = suite.frame.groupby(FUNCTIONALITY_COL).size()
    assert list(dict.fromkeys(suite.frame[FUNCTIONALITY_COL])) == list(written["functionalities"])
    for name, func in written["functionalities"].items():
        templates, cases = func.get("templates", []), func.get("cases", [])
        assert len(templates) >= 10 or len(cases) >= 10, name
        used = func.get("groups") or list(groups)
        rows = suite.frame[suite.frame[FUNCTIONALITY_COL] == name]
        for i in range(1, len(templates) + 1):
            made = rows[rows["id"].str.endswith(f":t{i:02d}")]
            assert sorted(made[TARGET_COL]) == sorted(used), (name, i)
        assert counts[name] == len(templates) * len(used) + len(cases)


def test_labels_are_davidson_classes_and_hate_is_only_in_hateful_functionalities(suite):
    labels = pd.Series([lbl for (lbl,) in suite.frame["labels"]])
    assert set(labels) == DAVIDSON_CLASSES
    by_func = labels.groupby(suite.frame[FUNCTIONALITY_COL]).agg(set)
    hateful = {"derogation", "dehumanising", "implicit_threat", "profane_hate", "evasion"}
    assert {f for f, s in by_func.items() if "hate_speech" in s} == hateful
    assert all(by_func[f] == {"hate_speech"} for f in hateful)
    assert by_func["profanity_not_hate"] == {"offensive"}
    assert by_func["reclaimed"] == {"neither", "offensive"}


def test_no_two_cases_read_the_same(suite):
    # Compared as stored (cleaned, redacted), ignoring case and spacing.
    keys = suite.frame["text"].map(lambda t: " ".join(t.casefold().split()))
    assert keys.is_unique, keys[keys.duplicated()].tolist()[:5]


def test_templated_cases_mention_their_group_in_the_bias_audit_terms(suite):
    # Group names and forms line up with the bias audit's term list, so the two reports can be read together.
    terms = load_identity_terms("builtin:identity")
    shared = GROUPS & set(terms.groups)
    assert shared == GROUPS - {"immigrant"}
    templated = suite.frame[suite.frame["id"].str.contains(r":t\d\d$")]
    members = terms.members(templated["text"].tolist())
    for group in shared:
        mine = (templated[TARGET_COL] == group).to_numpy()
        assert members[group][mine].all(), templated["text"][mine & ~members[group]].tolist()[:3]


def test_texts_are_prepared_as_loaded_data_and_not_redacted_twice(suite):
    assert suite.preprocessing == Preprocessing()
    texts = suite.texts
    assert isinstance(texts, PreparedTexts) and prepare_for(texts, suite.preprocessing) is texts
    handled = suite.frame[suite.frame["text_raw"].str.contains("@realtalk_88")]
    assert len(handled) == 8 and handled["text"].str.startswith("RT <HANDLE>:").all()
    # Invisible characters and look-alike letters are cleaned, as in loaded data.
    assert (
        suite.frame["text"].str.contains("\u200b").sum() == 0 and suite.frame["text_raw"].str.contains("\u200b").any()
    )
    custom = RedactionConfig(entities=("URL",))
    kept = load_functional_suite(redaction=custom)
    assert kept.preprocessing == Preprocessing(redaction=custom)
    assert kept.frame["text"].str.contains("@realtalk_88").sum() == 8
    assert kept.content_hash == suite.content_hash  # the hash is over the cases as written


# ----------------------------------------------------------------------------------------------- user suites

USER_YAML = """
classes: [hate_speech, neither, offensive]
groups:
  cats: {plural: cats, adj: feline}
  dogs: {plural: dogs, adj: canine}
  owls: {plural: owls, adj: owlish}
functionalities:
  derogation:
    label: hate_speech
    templates: ["{Plural} are vermin", "I hate {adj} folk"]
    groups: [cats, dogs]
  positive:
    label: neither
    templates: ["@pet_fan I love {plural}"]
    cases:
      - {text: "this damn weather", label: offensive}
      - {text: "Owls rule", target: owls}
"""


def test_a_user_yaml_suite_expands_templates_over_its_groups(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(USER_YAML, encoding="utf-8")
    ds = load_functional_suite(path)
    f = ds.frame
    assert ds.source == str(path) and ds.classes == ["hate_speech", "neither", "offensive"]
    assert f["id"].tolist() == [
        "derogation:cats:t01",
        "derogation:dogs:t01",
        "derogation:cats:t02",
        "derogation:dogs:t02",
        "positive:cats:t01",
        "positive:dogs:t01",
        "positive:owls:t01",
        "positive:-:c01",
        "positive:owls:c02",
    ]
    assert f["text_raw"][:4].tolist() == [
        "Cats are vermin",
        "Dogs are vermin",
        "I hate feline folk",
        "I hate canine folk",
    ]
    assert f["text"][4] == "<HANDLE> I love cats"
    assert [lbl for (lbl,) in f["labels"]] == ["hate_speech"] * 4 + ["neither"] * 3 + ["offensive", "neither"]
    assert f[TARGET_COL].tolist()[-2:] == ["", "owls"]
    assert f["row"].tolist() == list(range(1, 10))
    # Without `classes`, they are the labels used, sorted (as `load_dataset` infers them).
    path.write_text(USER_YAML.replace("classes: [hate_speech, neither, offensive]\n", ""), encoding="utf-8")
    assert load_functional_suite(path).classes == ["hate_speech", "neither", "offensive"]


def test_user_tables_load_with_or_without_a_target_column(tmp_path):
    rows = pd.DataFrame(
        {
            "text": ["I hate cats", "@bob cats are lovely", "this damn weather"],
            "label": ["hate_speech", "neither", "offensive"],
            "functionality": ["derogation", "positive", " profanity "],
            "target": ["cats", "cats", ""],
        }
    )
    csv = tmp_path / "suite.csv"
    rows.to_csv(csv, index=False)
    ds = load_functional_suite(csv)
    assert ds.source == str(csv) and ds.classes == ["hate_speech", "neither", "offensive"]
    assert ds.frame["id"].tolist() == ["derogation:cats:r1", "positive:cats:r2", "profanity:-:r3"]
    assert ds.frame[FUNCTIONALITY_COL].tolist() == ["derogation", "positive", "profanity"]
    assert ds.frame[TARGET_COL].tolist() == ["cats", "cats", ""]
    assert ds.frame["text"][1] == "<HANDLE> cats are lovely"
    assert ds.preprocessing == Preprocessing() and ds.violation(["hate_speech"]).tolist() == [1, 0, 0]

    jsonl = tmp_path / "suite.jsonl"
    no_target = rows.drop(columns="target")
    jsonl.write_text("\n".join(json.dumps(r) for r in no_target.to_dict("records")) + "\n", encoding="utf-8")
    ds = load_functional_suite(jsonl)
    assert ds.frame[TARGET_COL].tolist() == ["", "", ""]
    assert ds.frame["id"].tolist() == ["derogation:-:r1", "positive:-:r2", "profanity:-:r3"]
    assert ds.frame["text"].tolist() == prepare(no_target["text"])[0]


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            ("{Plural} are vermin", "{plurl} are vermin"),
            [r"functionalities\.derogation\.templates\[1\]", r"\{plurl\}", r"\{plural\}"],
        ),
        (
            ("groups: [cats, dogs]", "groups: [cats, dgos]"),
            [r"functionalities\.derogation\.groups", r"did you mean 'dogs'"],
        ),
        (("target: owls", "target: owl"), [r"functionalities\.positive\.cases\[2\]\.target", r"did you mean 'owls'"]),
        (("label: offensive", "label: ofensive"), [r"cases\[1\]\.label", r"did you mean 'offensive'", "classes"]),
        (('"I hate {adj} folk"', '"I hate all of them"'), [r"templates\[2\]", "uses no group form", "cases"]),
        (("dogs: {plural: dogs, adj: canine}", "dogs: {plural: dogs}"), [r"\{adj\}", r"\['dogs'\]", "add the form"]),
        (("    label: neither\n", "    labl: neither\n"), [r"functionalities\.positive", "label"]),
        (("functionalities:", "functionalitys:"), ["did you mean functionalities"]),
        (("groups: [cats, dogs]", "groups: [cats, dogs"), ["not valid YAML", "line"]),
    ],
)
def test_a_bad_yaml_suite_is_refused_naming_the_file_key_and_fix(tmp_path, edit, expected):
    path = tmp_path / "suite.yaml"
    assert edit[0] in USER_YAML
    path.write_text(USER_YAML.replace(edit[0], edit[1]), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_functional_suite(path)
    message = str(err.value)
    assert message.startswith(str(path))
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)


def test_every_problem_of_a_yaml_suite_is_reported_at_once(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(USER_YAML.replace("{Plural}", "{Plurl}").replace("target: owls", "target: owl"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)\{Plurl\}.*target: unknown group 'owl'"):
        load_functional_suite(path)


def _csv(tmp_path, rows: list[list[str]], header=("text", "label", "functionality")):
    path = tmp_path / "suite.csv"
    pd.DataFrame(rows, columns=list(header)).to_csv(path, index=False)
    return path


def test_a_bad_table_is_refused_naming_the_file_row_column_and_fix(tmp_path):
    path = _csv(tmp_path, [["I hate cats", "hate_speech", "derogation"]], header=("text", "label", "function"))
    with pytest.raises(DataError, match=r"suite\.csv: column\(s\) 'functionality' \(did you mean 'function'\?\)"):
        load_functional_suite(path)

    path = _csv(tmp_path, [["I hate cats", "hate_speech", "derogation"], ["cats are fine", "neither", " "]])
    with pytest.raises(DataError, match=r"suite\.csv: row 2, column 'functionality'.*name the functionality"):
        load_functional_suite(path)

    # Rows `load_dataset` rejects are errors here: a test case is never dropped silently.
    path = _csv(tmp_path, [["I hate cats", "hate_speech", "derogation"], ["cats are fine", "", "negation"]])
    with pytest.raises(DataError, match=r"strict mode(?s:.*)missing_label"):
        load_functional_suite(path)

    path = _csv(
        tmp_path,
        [["@amy I hate cats", "hate_speech", "a"], ["x", "neither", "b"], ["@bo I hate cats", "hate_speech", "c"]],
    )
    with pytest.raises(DataError, match=r"row 3 reads the same as row 1: '<HANDLE> I hate cats'"):
        load_functional_suite(path)


def test_a_bad_reference_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"no built-in functional suite 'hate'.*builtin:hate_speech"):
        load_functional_suite("builtin:hate")
    with pytest.raises(DataError, match=r"nowhere\.csv: functional suite not found"):
        load_functional_suite(tmp_path / "nowhere.csv")
    (tmp_path / "suite.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"suite\.xlsx: a functional suite is a YAML file.*got \.xlsx"):
        load_functional_suite(tmp_path / "suite.xlsx")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a functional suite is a YAML mapping"):
        load_functional_suite(tmp_path / "list.yaml")


# ----------------------------------------------------------------------------------------------- the breakdown


def test_wilson_interval_matches_published_values_and_the_monitor():
    # Newcombe (1998), table I: 0/10 -> (0, 0.2775); 81/263 -> (0.2553, 0.3662).
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    for k, n in [(2, 3), (1, 2), (17, 40), (0, 1)]:
        est = wilson(k, n)
        assert wilson_interval(k, n) == pytest.approx((est.low, est.high), abs=1e-12)
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)


def test_breakdown_figures_by_hand():
    functionality = ["a", "a", "a", "b", "b"]
    target = ["g1", "g2", "g1", "g1", None]
    y = [1, 1, 0, 0, 0]
    flagged = [True, False, False, True, False]  # right, wrong, right, wrong, right
    out = functional_breakdown(functionality, target, y, flagged)
    json.dumps(out)  # JSON-ready as returned

    assert (out["n"], out["n_violation"], out["accuracy"], out["flag_rate"]) == (5, 2, 3 / 5, 2 / 5)
    a, b = out["functionalities"]["a"], out["functionalities"]["b"]
    assert (a["n"], a["n_violation"], a["accuracy"], a["flag_rate"]) == (3, 2, 2 / 3, 1 / 3)
    assert (b["n"], b["n_violation"], b["accuracy"], b["flag_rate"]) == (2, 0, 1 / 2, 1 / 2)
    # Wilson 95% by hand for 2/3: centre (p + z²/2n)/(1 + z²/n), half z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n).
    z = 1.959963984540054
    centre = (2 / 3 + z * z / 6) / (1 + z * z / 3)
    half = z * np.sqrt((2 / 9) / 3 + z * z / 36) / (1 + z * z / 3)
    assert a["accuracy_ci95"] == pytest.approx([centre - half, centre + half])
    assert a["accuracy_ci95"] == pytest.approx([0.2077, 0.9385], abs=1e-4)
    assert out["accuracy_ci95"] == pytest.approx([0.2307, 0.8824], abs=1e-4)  # 3/5

    # Per target: the case without one is left out; g2's only case is wrong.
    assert list(out["targets"]) == ["g1", "g2"]
    assert (out["targets"]["g1"]["n"], out["targets"]["g1"]["accuracy"]) == (3, 2 / 3)
    assert (out["targets"]["g2"]["n"], out["targets"]["g2"]["accuracy"], out["targets"]["g2"]["flag_rate"]) == (
        1,
        0.0,
        0.0,
    )
    assert out["targets"]["g2"]["accuracy_ci95"] == pytest.approx([0.0, 0.7935], abs=1e-4)
    cells = out["by_functionality_target"]
    assert {f: {t: (c["n"], c["accuracy"]) for t, c in ts.items()} for f, ts in cells.items()} == {
        "a": {"g1": (2, 1.0), "g2": (1, 0.0)},
        "b": {"g1": (1, 0.0)},
    }
    assert [(w["functionality"], w["accuracy"], w["n"]) for w in out["worst"]] == [("b", 0.5, 2), ("a", 2 / 3, 3)]
    assert all(
        type(v) in (int, float) for e in out["functionalities"].values() for k, v in e.items() if k != "accuracy_ci95"
    )


def test_breakdown_lists_only_imperfect_functionalities_as_worst_and_takes_no_targets():
    out = functional_breakdown(np.array(["x", "y", "y", "z"]), None, np.array([1, 0, 0, 1]), np.array([1, 1, 0, 1]))
    assert out["targets"] == {} and out["by_functionality_target"] == {}
    assert [w["functionality"] for w in out["worst"]] == ["y"]
    assert functional_breakdown(["x"], None, [0], [False])["worst"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        ((["a", "b"], None, [1], [True, False]), "y has 1 items but functionality has 2"),
        ((["a"], None, [2], [True]), r"y must hold only 0/1 or booleans, got \[2\]"),
        ((["a"], None, [1], [0.5]), "flagged must hold only 0/1"),
        ((["a", ""], None, [1, 0], [1, 0]), "empty name at index 1"),
        (([], None, [], []), "functionality is empty"),
        ((["a"], ["g", "h"], [1], [1]), "target has 2 items"),
    ],
)
def test_breakdown_refuses_malformed_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        functional_breakdown(*args)


# ----------------------------------------------------------------------------------------------- end to end


def test_tfidf_fitted_on_davidson_gives_a_breakdown_of_every_functionality(davidson_csv, suite):
    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False).sample(n=5000, random_state=0)
    train, val = df.iloc[:3000], df.iloc[3000:]
    scorer = TfidfLogReg().fit(prepare(train["text"])[0], train["label"].tolist())
    hate = scorer.classes_.tolist().index("hate_speech")
    val_y = (val["label"] == "hate_speech").to_numpy()
    threshold = M.threshold_for_best_f1(val_y, scorer.predict_proba(prepare(val["text"])[0])[:, hate])

    scores = scorer.predict_proba(suite.texts)[:, hate]
    y = suite.violation(["hate_speech"])
    out = functional_breakdown(suite.frame[FUNCTIONALITY_COL], suite.frame[TARGET_COL], y, scores >= threshold)

    assert list(out["functionalities"]) == list(dict.fromkeys(suite.frame[FUNCTIONALITY_COL]))
    assert set(out["targets"]) == GROUPS
    assert sum(e["n"] for e in out["functionalities"].values()) == out["n"] == len(suite)
    assert sum(e["n_violation"] for e in out["functionalities"].values()) == out["n_violation"] == y.sum()
    assert out["accuracy"] == pytest.approx(np.mean((scores >= threshold) == y))
    # Even a bag of words fitted on 3,000 tweets flags hateful cases more often than neutral mentions of a group.
    hateful_flag_rate = (scores[y == 1] >= threshold).mean()
    assert hateful_flag_rate > out["functionalities"]["neutral_identity"]["flag_rate"] + 0.1
    json.dumps(out)
