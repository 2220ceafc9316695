"""`cascade fit` end to end on a real Davidson slice: trained stages, fitted thresholds, a saved run that reloads."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from finesieve.cascade.build import fit_cascade, legacy_cascade
from finesieve.cascade.fit import CascadeConfig
from finesieve.cli import app
from finesieve.data.errors import LeakageError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.cascade import Cascade
from finesieve.models.char_cnn import CharCNNConfig, CharCNNScorer
from finesieve.runs import load_scorer
from finesieve.train.recipe import fit_and_save, train_reference

POSITIVE = ["hate_speech"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, davidson_slice):
    root = tmp_path_factory.mktemp("cascade")
    path = root / "davidson.csv"
    davidson_slice[["text", "label"]].to_csv(path, index=False)
    dataset = load_dataset(path, ColumnSpec(text_col="text", label_cols=("label",)))
    # The "fine-tuned model" is TF-IDF here to keep the test fast; the cascade treats every scorer alike.
    model = train_reference("tfidf", dataset, positive=POSITIVE, out=root / "model", n_boot=0)
    val = model.splits.dataset("val")
    cnn = CharCNNScorer.from_config(CharCNNConfig(channels=32, max_epochs=3, seed=0))
    pre = fit_and_save(
        cnn,
        "char_cnn",
        model.splits,
        positive=POSITIVE,
        out=root / "prefilter",
        fit_kwargs={"val_texts": val.texts, "val_labels": val.labels},
        n_boot=0,
    )
    return {"root": root, "path": path, "dataset": dataset, "model": model, "prefilter": pre}


def test_fit_cascade_meets_the_budget_and_saves_a_loadable_run(trained):
    root = trained["root"]
    run = fit_cascade(
        trained["dataset"],
        model_run=root / "model",
        prefilter_run=root / "prefilter",
        rules="builtin:hate_speech",
        config=CascadeConfig(budget=0.4, on_infeasible="budget"),
        out=root / "cascade",
        n_boot=50,
    )
    assert run.fit.chosen["route"] <= 0.4
    test = run.splits.dataset("test")
    d = run.decisions
    assert len(d.action) == len(test)
    assert set(d.action) <= {"deliver", "review", "block"}
    assert run.costs["cascade"]["route"] == pytest.approx(d.route_fraction())
    from finesieve.cascade.cost import PriceTable

    shares = run.costs["cascade"]["reach"]
    assert shares["rules"] == 1.0 and shares["model"] == pytest.approx(d.route_fraction())
    assert run.costs["cascade"]["cost_per_million"] == pytest.approx(
        sum(run.stage_costs[s].per_million(PriceTable()) * share for s, share in shares.items())
    )
    cascade_result = run.results["cascade"].to_dict()
    assert cascade_result["recall"] == pytest.approx(
        (d.flagged & (test.violation(POSITIVE) == 1)).sum() / test.violation(POSITIVE).sum()
    )

    manifest = json.loads((root / "cascade" / "manifest.json").read_text())
    assert manifest["kind"] == "cascade"
    assert manifest["task"]["threshold"] == run.fit.thresholds.review
    assert manifest["cascade"]["stages"]["model"]["run"] == str(root / "model")
    assert manifest["cascade"]["fit"]["targets"]["budget"] == 0.4
    assert manifest["splits"]["split_hash"] == trained["model"].splits.split_hash

    loaded, loaded_run = load_scorer(root / "cascade")
    assert isinstance(loaded, Cascade) and loaded_run.threshold == run.fit.thresholds.review
    again = loaded.decide(test.texts)
    assert list(again.action) == list(d.action)
    np.testing.assert_allclose(again.proba, d.proba, rtol=1e-5, atol=1e-6)


def test_a_prefilter_trained_on_the_model_validation_rows_is_refused(trained, tmp_path):
    other = make_splits(trained["dataset"], SplitConfig(seed=7))
    val = other.dataset("val")
    cnn = CharCNNScorer.from_config(CharCNNConfig(channels=8, max_epochs=1, seed=0))
    fit_and_save(
        cnn,
        "char_cnn",
        other,
        positive=POSITIVE,
        out=tmp_path / "leaky",
        fit_kwargs={"val_texts": val.texts, "val_labels": val.labels},
        n_boot=0,
    )
    with pytest.raises(LeakageError, match="validation/test"):
        fit_cascade(trained["dataset"], model_run=trained["root"] / "model", prefilter_run=tmp_path / "leaky")


def test_legacy_system_applies_rules_as_written(trained):
    from finesieve.models.rules import RulesScorer

    train = trained["model"].splits.dataset("train")
    rules = RulesScorer(policy="builtin:hate_speech").fit(train.texts, train.labels)
    legacy = legacy_cascade(
        rules, trained["prefilter"].scorer, positive=POSITIVE, threshold=trained["prefilter"].threshold
    )
    test = trained["model"].splits.dataset("test")
    d = legacy.decide(test.texts)
    hate_rules = {r.name for r in rules.policy_.rules if r.category == "hate_speech"}
    fired_hate = np.array([bool(set(f) & hate_rules) for f in d.rules_fired])
    assert fired_hate.any()
    assert (d.action[fired_hate] == "review").all()  # a lexicon hit goes to the queue, as the old system did
    assert (d.decided_by[~fired_hate] == "model").all()  # the rest: the pre-filter is the legacy's last stage


def test_cli_cascade_fit_and_infeasible_error(trained, tmp_path):
    root = trained["root"]
    runner = CliRunner()
    args = [
        "cascade",
        "fit",
        "--data",
        str(trained["path"]),
        "--model",
        str(root / "model"),
        "--prefilter",
        str(root / "prefilter"),
        "--n-boot",
        "0",
    ]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "c1"), "--budget", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {r["system"] for r in payload["test"]} == {"fine-tuned model", "cascade"}
    assert payload["fit"]["targets"]["budget"] == 0.5
    assert (tmp_path / "c1" / "manifest.json").exists()

    result = runner.invoke(
        app,
        args + ["--out", str(tmp_path / "c2"), "--budget", "0.01", "--recall-floor", "1.0", "--on-infeasible", "error"],
    )
    assert result.exit_code == 2
    assert "cannot all be met" in result.output and "Fix:" in result.output
    assert not (tmp_path / "c2" / "manifest.json").exists()

    result = runner.invoke(app, args + ["--out", str(tmp_path / "c3"), "--budget", "1.5"])
    assert result.exit_code == 2 and "budget" in result.output


def test_a_cascade_run_is_evaluated_like_any_run(trained, tmp_path):
    """`finesieve eval CASCADE_RUN` scores it on its saved test split, judged by its actions."""
    root = trained["root"]
    run = fit_cascade(
        trained["dataset"],
        model_run=root / "model",
        prefilter_run=root / "prefilter",
        config=CascadeConfig(budget=0.5),
        out=tmp_path / "c",
        n_boot=0,
    )
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(tmp_path / "c"),
            "--data",
            str(trained["path"]),
            "--positive",
            "hate_speech",
            "--n-boot",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    expected = run.results["cascade"].to_dict()
    assert payload["n"] == expected["n"]
    for key in ("precision", "recall", "roc_auc", "flag_rate"):
        assert payload[key] == pytest.approx(expected[key], abs=1e-6), key
