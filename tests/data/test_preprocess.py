"""The one text preparation (clean, then redact): idempotent on real data, tagged, recorded by every dataset."""

import pandas as pd
import pytest

from finesieve.data.load import load_dataset
from finesieve.data.preprocess import PreparedTexts, Preprocessing, prepare, prepare_for
from finesieve.data.redact import RedactionConfig
from finesieve.data.spec import ColumnSpec


@pytest.fixture(scope="module")
def real_texts(davidson_slice, sms_csv) -> list[str]:
    sms = pd.read_csv(sms_csv, nrows=1500)
    return davidson_slice["text"].astype(str).tolist()[:1500] + sms["text"].astype(str).tolist()


def test_preparing_twice_changes_nothing_on_real_data(real_texts):
    """A loaded scorer may be handed texts a caller already prepared: preparing again must not change them."""
    once, counts = prepare(real_texts)
    assert sum(counts.values()) > 20  # the data holds phone numbers, URLs and handles: redaction did work
    assert sum(a != b for a, b in zip(once, real_texts)) > 100
    twice, again = prepare(once)
    assert list(twice) == list(once)
    assert sum(again.values()) == 0  # a placeholder is never taken for personal data


def test_prepared_texts_are_not_prepared_again_and_other_settings_are():
    prep = Preprocessing()
    texts, _ = prepare(["call me on 555 123 4567"], prep)
    assert isinstance(texts, PreparedTexts) and texts.preprocessing == prep
    assert prepare_for(texts, prep) is texts
    only_email = Preprocessing(redaction=RedactionConfig(entities=("EMAIL",)))
    raw = ["call me on 555 123 4567, me@x.com"]
    assert prepare_for(raw, only_email) == ["call me on 555 123 4567, <EMAIL>"]
    assert prepare_for(raw, Preprocessing.none()) is raw and prepare_for(raw, None) is raw


def test_a_loaded_dataset_records_its_preprocessing(sms_csv):
    spec = ColumnSpec(text_col="text", label_cols=("label",))
    ds = load_dataset(sms_csv, spec, max_rows=200, redaction=RedactionConfig(entities=("PHONE", "URL")))
    assert ds.preprocessing == Preprocessing(redaction=RedactionConfig(entities=("PHONE", "URL")), text_field="text")
    assert isinstance(ds.texts, PreparedTexts) and ds.texts.preprocessing == ds.preprocessing
    assert ds.subset(list(range(10))).preprocessing == ds.preprocessing
