"""A small real task for the fine-tuning tests. The tiny models (tokenizer_dir, tiny_bert, tiny_llama) are
session fixtures in tests/conftest.py, shared with the scorer contract."""

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def sms_task(sms_csv):
    """800 training and 300 held-out real SMS messages (spam vs ham)."""
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).sample(1100, random_state=0).reset_index(drop=True)
    return df.iloc[:800], df.iloc[800:]
