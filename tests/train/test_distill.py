"""`fit_prefilter(..., teacher=RUN_DIR)` on a real Davidson slice (hate_speech vs the rest): a TF-IDF teacher run,
a char-CNN pre-filter trained with and without it on the same split and seed. The distilled run records its
teacher and weight, scores differently from the plain one, reloads with equal scores; bad teachers are refused.
The validation recall at a fixed route (the share of messages the pre-filter sends on to the model) of both is
measured and printed, not asserted: on a slice this small it moves with the seed.
"""

import json

import numpy as np
import pytest

from finesieve.data.errors import ConfigError, LeakageError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.base import positive_scores
from finesieve.runs import MANIFEST, load_run
from finesieve.train.ensemble import run_reference
from finesieve.train.prefilter import fit_prefilter, prefilter_scorer
from finesieve.train.recipe import train_reference

POSITIVE = ["hate_speech"]
TINY = ["channels=24", "embed_dim=8", "max_chars=160", "kernel_sizes=[3,5]", "max_epochs=3"]
SPEC = ColumnSpec(text_col="text", label_cols=("label",))
ROUTE = 0.2  # the share of messages the pre-filter sends on


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, davidson_slice_csv):
    """On the 2,000-row Davidson slice: a TF-IDF teacher run; a plain and a distilled char-CNN run."""
    root = tmp_path_factory.mktemp("distill")
    dataset = load_dataset(davidson_slice_csv, SPEC)
    train_reference("tfidf", dataset, positive=POSITIVE, out=root / "teacher", n_boot=0)
    plain = fit_prefilter(
        prefilter_scorer("char_cnn", TINY), "char_cnn", dataset, positive=POSITIVE, out=root / "plain"
    )
    distilled = fit_prefilter(
        prefilter_scorer("char_cnn", TINY),
        "char_cnn",
        dataset,
        positive=POSITIVE,
        out=root / "distilled",
        teacher=root / "teacher",
    )
    return {"root": root, "dataset": dataset, "plain": plain, "distilled": distilled}


def test_the_distilled_run_records_its_teacher_and_reloads_with_equal_scores(trained):
    root, distilled = trained["root"], trained["distilled"]
    manifest = json.loads((root / "distilled" / MANIFEST).read_text())
    section = manifest["distillation"]
    assert section["weight"] == 0.5 and manifest["scorer_config"]["distill_weight"] == 0.5  # the default
    assert section["teacher"] == json.loads(json.dumps(run_reference(load_run(root / "teacher"))))
    assert section["teacher"]["run"] == str(root / "teacher") and section["teacher"]["kind"] == "tfidf"
    assert "distillation" not in json.loads((root / "plain" / MANIFEST).read_text())

    val = distilled.splits.dataset("val")
    run = load_run(root / "distilled")
    np.testing.assert_array_equal(run.scorer.predict_proba(val.texts), distilled.scorer.predict_proba(val.texts))


def test_distillation_changes_the_network(trained):
    """Same data, split, settings and seed: only the teacher differs, and the scores move."""
    plain, distilled = trained["plain"].scorer, trained["distilled"].scorer
    assert plain.get_config().model_copy(update={"distill_weight": 0.5}) == distilled.get_config()
    val = trained["distilled"].splits.dataset("val")
    diff = np.abs(distilled.predict_proba(val.texts) - plain.predict_proba(val.texts))
    assert diff.max() > 0.05, diff.max()


def recall_at_route(scores: np.ndarray, y: np.ndarray, route: float) -> float:
    """Share of the positives among the top `route` share of messages by score (those sent on to the model)."""
    sent = np.argsort(-scores, kind="stable")[: int(round(route * len(scores)))]
    return float(y[sent].sum() / y.sum())


def test_recall_at_a_fixed_route_plain_and_distilled(trained, capsys):
    val = trained["plain"].splits.dataset("val")
    y = val.violation(POSITIVE)
    figures = {}
    for name in ("plain", "distilled"):
        scorer = trained[name].scorer
        scores = positive_scores(scorer.predict_proba(val.texts), scorer.classes_, POSITIVE, False)
        figures[name] = recall_at_route(scores, y, ROUTE)
    with capsys.disabled():
        print(f"\nvalidation recall of hate_speech at a {ROUTE:.0%} route ({int(y.sum())} positives):", figures)
    assert all(ROUTE < r <= 1.0 for r in figures.values()), figures  # each ranks better than sending on at random


def test_a_bad_teacher_is_refused(trained, davidson_slice):
    root, dataset = trained["root"], trained["dataset"]
    scorer = prefilter_scorer("char_cnn", TINY)

    path = root / "fewer.csv"
    davidson_slice[["text", "label"]].iloc[:1800].to_csv(path, index=False)
    train_reference("tfidf", load_dataset(path, SPEC), positive=POSITIVE, out=root / "other-data", n_boot=0)
    with pytest.raises(ConfigError, match=r"--teacher .*other-data: it was trained on data with content hash"):
        fit_prefilter(scorer, "char_cnn", dataset, positive=POSITIVE, out=root / "x", teacher=root / "other-data")

    # Another seed: the teacher trained on rows this split holds out for validation and test.
    other_split = make_splits(dataset, SplitConfig(seed=1))
    train_reference("tfidf", dataset, positive=POSITIVE, out=root / "seed1", splits=other_split, n_boot=0)
    with pytest.raises(LeakageError, match=r"--teacher .*seed1 was trained on \d+ message\(s\) of this split"):
        fit_prefilter(scorer, "char_cnn", dataset, positive=POSITIVE, out=root / "x", teacher=root / "seed1")

    with pytest.raises(ConfigError, match="char_cnn pre-filter only"):
        fit_prefilter(
            prefilter_scorer("tfidf"), "tfidf", dataset, positive=POSITIVE, out=root / "x", teacher=root / "teacher"
        )
    with pytest.raises(ConfigError, match="needs a teacher"):
        fit_prefilter(scorer, "char_cnn", dataset, positive=POSITIVE, out=root / "x", distill_weight=0.3)
    assert not (root / "x").exists()
