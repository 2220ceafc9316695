"""The prompt baseline: answer-token probabilities from a tiny local causal LM, and from a real local HTTP server.

The language models are random (Llama- and Qwen2-style, hidden size 32) with tokenizers built here offline:
what is tested is the plumbing (which position, which token, which rows reach the LM head, padding), which a
random model exercises as well as a trained one.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, logsumexp, softmax

from finesieve.data.errors import ConfigError
from finesieve.models.base import NotFittedError
from finesieve.models.prompt_baseline import EndpointError, PromptBaseline, PromptBaselineConfig, map_top_logprobs
from finesieve.models.prompts import TaskPrompt, load_prompt

TEXTS = [
    "you people are all the same, get out",
    "lol",
    "good morning everyone, have a great day at work today and see you at the game tonight",
    "",
    "what a terrible referee \N{POUTING FACE}",
    "neither hate nor offensive, just a message",
    "ok",
]
LABELS = ["hate_speech", "neither", "neither", "neither", "offensive", "neither", "neither"]
WORDS = {"hate_speech": "hate", "neither": "neither", "offensive": "offensive"}


# ----------------------------------------------------------------------------------------------- tiny models


def _corpus() -> list[str]:
    prompt = load_prompt("builtin:davidson")
    return [prompt.render(t, few_shot=True) for t in TEXTS] + [" ".join(WORDS.values())] * 5


def _tokenizer(kind: str):
    """A byte-pair tokenizer trained here on the rendered prompts, in the style of the model family.

    llama: SentencePiece-like ("▁hate"), a BOS token, no pad token.
    qwen2: byte-level ("Ġhate"), no BOS, the pad token equal to the end-of-text token (the padding pitfall).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    if kind == "llama":
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        specials, alphabet = ["<s>", "</s>"], []
    else:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        specials, alphabet = ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, initial_alphabet=alphabet, show_progress=False),
    )
    if kind == "llama":
        bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _save_tiny_lm(kind: str, path) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer(kind)
    dims = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**dims, num_key_value_heads=1, bos_token_id=0, eos_token_id=1))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**dims, num_key_value_heads=2, eos_token_id=0, pad_token_id=0))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return _save_tiny_lm("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def qwen2_path(tmp_path_factory):
    return _save_tiny_lm("qwen2", tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(params=["llama", "qwen2"])
def lm(request):
    """(path, the token each label word should be read from)."""
    path = request.getfixturevalue(f"{request.param}_path")
    prefix = "▁" if request.param == "llama" else "Ġ"  # the space before the answer is part of the word's token
    return path, {c: prefix + w for c, w in WORDS.items()}


def _fitted(path, **kwargs) -> PromptBaseline:
    return PromptBaseline(path, prompt="builtin:davidson", progress=False, **kwargs).fit(TEXTS, LABELS)


# ----------------------------------------------------------------------------------------------- hf backend


def test_hf_scores_are_probabilities_and_padding_invariant(lm):
    path, _ = lm
    scorer = _fitted(path, batch_size=3)
    assert scorer.classes_.tolist() == ["hate_speech", "neither", "offensive"] and scorer.multilabel_ is False
    left = scorer.label_logprobs(TEXTS)
    proba = scorer.predict_proba(TEXTS)
    assert proba.shape == (len(TEXTS), 3)
    assert np.all((proba > 0) & (proba < 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert proba.std(axis=0).max() > 1e-3  # the scores depend on the message
    scorer.padding_side = "right"
    right = scorer.label_logprobs(TEXTS)
    scorer.padding_side, scorer.batch_size = "left", len(TEXTS)
    one_batch = scorer.label_logprobs(TEXTS)
    singles = np.vstack([scorer.label_logprobs([t]) for t in TEXTS])
    for other in (right, one_batch, singles):
        np.testing.assert_allclose(other, left, atol=1e-4, rtol=1e-4)


def test_hf_matches_full_logits_of_the_unpadded_prompt(lm):
    """Slow reference: every position's logits for one prompt at a time, the last row read by token name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, label_tokens = lm
    scorer = _fitted(path, few_shot=True, batch_size=4)
    assert scorer.label_tokens_ == [label_tokens[c] for c in scorer.classes_]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok.convert_tokens_to_ids([label_tokens[c] for c in scorer.classes_])
    prompt = load_prompt("builtin:davidson")
    expected = []
    for text in TEXTS:
        inputs = tok(prompt.render(text, few_shot=True), return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1].double().numpy()  # (vocab,) at the last position
        expected.append(softmax(log_softmax(logits)[ids]))
    np.testing.assert_allclose(scorer.predict_proba(TEXTS), np.array(expected), atol=1e-5)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_hf_lm_head_sees_one_row_per_message(lm, padding_side):
    path, _ = lm
    scorer = _fitted(path, batch_size=4, padding_side=padding_side)
    head = scorer._hf_model().get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(lambda module, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    try:
        scorer.predict_proba(TEXTS)
    finally:
        handle.remove()
    assert [s[0][:-1] for s in seen] == [(4, 1), (3, 1)]  # (batch, positions) fed to the head: the last one only
    assert all(s[1][-1] == len(scorer._tokenizer) for s in seen)


def test_hf_label_words_must_start_with_different_tokens(qwen2_path):
    prompt = TaskPrompt(
        name="clash",
        instruction="Classify.",
        labels={"a": "first", "b": "second"},
        label_words={"a": "qqa", "b": "qqb"},
    )  # unseen in training: spelt letter by letter
    with pytest.raises(ConfigError, match=r"'qqa' and 'qqb' both start with token 'q'.*Change label_words"):
        PromptBaseline(qwen2_path, prompt=prompt, progress=False).fit(["x"], ["a"])


def test_hf_calibration_and_save_load_round_trip(llama_path, tmp_path):
    raw = _fitted(llama_path)
    cal = _fitted(llama_path, calibrate=True)
    assert raw.calibration_ is None and cal.calibration_["kind"] == "softmax" and cal.calibration_["temperature"] > 0
    p_raw, p_cal = raw.predict_proba(TEXTS), cal.predict_proba(TEXTS)
    np.testing.assert_allclose(p_cal.sum(axis=1), 1.0)

    def nll(p):
        return -np.mean(np.log(p[np.arange(len(TEXTS)), [raw.classes_.tolist().index(y) for y in LABELS]]))

    assert nll(p_cal) < nll(p_raw)  # fitted on these very labels
    for name, scorer, proba in (("raw", raw, p_raw), ("cal", cal, p_cal)):
        scorer.save(tmp_path / name)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "prompt.yaml",
            "prompt_baseline.json",
            "scorer_config.json",
        ]
        again = PromptBaseline.load(tmp_path / name)
        assert again.get_config() == scorer.get_config() and again.model == llama_path
        np.testing.assert_allclose(again.predict_proba(TEXTS), proba, atol=1e-6)


def test_hf_load_sets_up_the_label_tokens_and_refuses_changed_ones(llama_path, tmp_path):
    scorer = _fitted(llama_path)
    scorer.save(tmp_path)
    again = PromptBaseline.load(tmp_path)
    # Ready to score as loaded: scoring adds no learned state (the scorer contract's predict-keeps-state).
    assert again.label_token_ids_ == scorer.label_token_ids_ and again.label_tokens_ == scorer.label_tokens_
    # A model whose tokenizer now starts the label words differently is refused, not scored with other tokens.
    state = json.loads((tmp_path / "prompt_baseline.json").read_text())
    state["label_token_ids"] = state["label_token_ids"][::-1]
    (tmp_path / "prompt_baseline.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="model files changed"):
        PromptBaseline.load(tmp_path)


def test_hf_multilabel_calibration(llama_path):
    labels = [("hate_speech", "offensive"), (), (), (), ("offensive",), (), ()]
    scorer = PromptBaseline(llama_path, progress=False, calibrate=True).fit(TEXTS, labels)
    assert scorer.multilabel_ and scorer.calibration_["kind"] == "platt"
    proba = scorer.predict_proba(TEXTS)
    assert proba.shape == (len(TEXTS), 3) and np.all((proba > 0) & (proba < 1))


def test_contract_errors(llama_path):
    scorer = PromptBaseline(llama_path, progress=False)
    with pytest.raises(NotFittedError, match="PromptBaseline"):
        scorer.predict_proba(["x"])
    with pytest.raises(ConfigError, match=r"labels \['spam'\] are not classes of prompt 'davidson'"):
        scorer.fit(["x", "y"], ["spam", "neither"])
    scorer.fit(["x"], ["neither"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        scorer.predict_proba("one message")
    assert scorer.predict_proba([]).shape == (0, 3)
    with pytest.raises(ValueError, match="backend='openai'"):
        PromptBaseline(llama_path, api="chat").fit(["x"], ["neither"])
    with pytest.raises(ValueError, match="colour"):
        PromptBaselineConfig(model="m", colour="red")


# ----------------------------------------------------------------------------------------------- openai backend

# First-token alternatives the fake server returns, by message. Label words of builtin:sms_spam: spam, normal.
TOPS = {
    "WIN a prize": {" spam": -0.2, " Spam": -2.0, " normal": -3.0, " the": -4.0},
    "see you at 6": {" normal": -0.1, " spam": -3.5, "\n": -4.0},
    "no label here": {" the": -1.0, " a": -1.5, " spam": -2.5},  # "normal" missing: floored
}


class FakeLLM(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if server.failures:
            return self._send(server.failures.pop(0), {"error": {"message": "scripted failure"}}, {"Retry-After": "0"})
        if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided"}})
        if body.get("model") != "fake-model":
            return self._send(400, {"error": {"message": f"model {body.get('model')} does not exist"}})
        prompt = (
            body["prompt"]
            if self.path.endswith("/completions") and "prompt" in body
            else body["messages"][-1]["content"]
        )
        top = TOPS[prompt.rsplit("Message: ", 1)[1].removesuffix("\nAnswer:")]
        best = max(top, key=top.get)
        if self.path == "/v1/completions":
            logprobs = {"tokens": [best], "token_logprobs": [top[best]], "top_logprobs": [top], "text_offset": [0]}
            return self._send(
                200, {"object": "text_completion", "choices": [{"index": 0, "text": best, "logprobs": logprobs}]}
            )
        if self.path == "/v1/chat/completions":  # chat models answer without the leading space
            alts = [{"token": t.strip() or t, "logprob": lp, "bytes": None} for t, lp in top.items()]
            content = [{"token": best.strip(), "logprob": top[best], "top_logprobs": alts}]
            return self._send(
                200,
                {
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": best.strip()},
                            "logprobs": {"content": content},
                        }
                    ],
                },
            )
        self._send(404, {"error": {"message": "no such route"}})

    def _send(self, code, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    httpd.requests, httpd.failures, httpd.key = [], [], None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _remote(server, monkeypatch, **kwargs) -> PromptBaseline:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    options = dict(
        backend="openai",
        prompt="builtin:sms_spam",
        base_url=f"http://127.0.0.1:{server.server_port}/v1",
        backoff_s=0.01,
        progress=False,
    )
    options = {"model": "fake-model", **options, **kwargs}
    return PromptBaseline(**options).fit(["x", "y"], ["spam", "ham"])


def _expected(message, chat=False, missing=None):
    top = TOPS[message]
    spam = logsumexp([lp for t, lp in top.items() if t.strip().casefold() == "spam"])
    normal = [lp for t, lp in top.items() if t.strip().casefold() == "normal"]
    normal = logsumexp(normal) if normal else (missing if missing is not None else min(top.values()))
    return softmax([normal, spam])  # classes_ order: ham, spam


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_scores_from_top_logprobs(server, monkeypatch, api):
    scorer = _remote(server, monkeypatch, api=api, concurrency=3)
    messages = list(TOPS) * 2
    proba = scorer.predict_proba(messages)
    np.testing.assert_allclose(proba, [_expected(m) for m in messages])  # order kept under concurrency
    assert proba[0, 1] > 0.9 and proba[1, 0] > 0.9
    assert len(server.requests) == len(messages)
    for request in server.requests:
        assert request["path"] == f"/v1/{'chat/completions' if api == 'chat' else 'completions'}"
        assert request["body"]["max_tokens"] == 1 and request["auth"] is None  # no key set: none sent
        if api == "chat":
            assert request["body"]["logprobs"] is True and request["body"]["top_logprobs"] == 20
            text = request["body"]["messages"][0]["content"]
        else:
            assert request["body"]["logprobs"] == 20
            text = request["body"]["prompt"]
        assert text.startswith("You are filtering text messages") and text.endswith("\nAnswer:")


def test_openai_missing_label_gets_a_floor(server, monkeypatch):
    default = _remote(server, monkeypatch).label_logprobs(["no label here"])[0]
    assert default.tolist() == [-2.5, -2.5]  # "normal" absent: the lowest returned log-probability bounds it
    fixed = _remote(server, monkeypatch, missing_logprob=-12.0)
    np.testing.assert_allclose(fixed.predict_proba(["no label here"])[0], _expected("no label here", missing=-12.0))


def test_openai_retries_server_errors_then_succeeds(server, monkeypatch):
    server.failures = [500, 429]
    scorer = _remote(server, monkeypatch, max_retries=2)
    np.testing.assert_allclose(scorer.predict_proba(["WIN a prize"])[0], _expected("WIN a prize"))
    assert len(server.requests) == 3
    server.failures = [503, 503, 503]
    with pytest.raises(EndpointError, match=r"failed after 2 attempts \(last: 503"):
        _remote(server, monkeypatch, max_retries=1).predict_proba(["WIN a prize"])


def test_openai_auth_and_request_errors_are_clear(server, monkeypatch):
    server.key = "s3cret"
    with pytest.raises(EndpointError, match=r"401.*Incorrect API key.*set the environment variable OPENAI_API_KEY"):
        _remote(server, monkeypatch).predict_proba(["WIN a prize"])
    assert len(server.requests) == 1  # 401 is not retried
    monkeypatch.setenv("MY_LLM_KEY", "s3cret")
    scorer = _remote(server, monkeypatch, api_key_env="MY_LLM_KEY")
    assert scorer.predict_proba(["WIN a prize"])[0, 1] > 0.9 and server.requests[-1]["auth"] == "Bearer s3cret"
    with pytest.raises(EndpointError, match="400.*does not exist.*check model 'other-model'"):
        _remote(server, monkeypatch, api_key_env="MY_LLM_KEY", model="other-model").predict_proba(["WIN a prize"])
    with pytest.raises(EndpointError, match="failed after 1 attempts"):
        _remote(server, monkeypatch, base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2).predict_proba(["x"])


def test_openai_save_load(server, monkeypatch, tmp_path):
    scorer = _remote(server, monkeypatch, api="chat")
    scorer.save(tmp_path)
    again = PromptBaseline.load(tmp_path)
    assert again.backend == "openai" and again.api == "chat" and again.prompt_ == scorer.prompt_
    np.testing.assert_allclose(again.predict_proba(list(TOPS)), scorer.predict_proba(list(TOPS)))


def test_map_top_logprobs_variants_prefixes_and_floor():
    words = ["harassment", "scam", "spam", "offplatform", "ok"]
    top = {" Scam": -1.0, "scam": -2.0, " off": -3.0, "OK": -4.0, " s": -0.5, " har": -6.0, " x": -7.0}
    got = map_top_logprobs(top, words)
    np.testing.assert_allclose(got, [-6.0, np.logaddexp(-1.0, -2.0), -7.0, -3.0, -4.0])  # " s" is ambiguous: ignored
    assert map_top_logprobs({}, ["a", "b"], missing_logprob=-9.0).tolist() == [-9.0, -9.0]
