"""The prompt baseline: an instruction-following LLM asked to classify, scored by its answer-word probabilities.

This is the number later fine-tuned models must beat. Each message is put into a task prompt
(`finesieve.models.prompts`) that ends right before the answer word ("...\\nAnswer:"). The score of a class is
the probability the model gives to the first token of that class's label word at that position, renormalised
over the label words: a real score per class, so it yields a real ROC curve (reading the generated text gives
0/1 answers and a degenerate curve).

Two backends:
  "hf"      a local Hugging Face causal LM (model id or path). One forward pass per batch; only the last real
            position of each prompt goes through the LM head (`logits_to_keep`), so the cost is one vocabulary
            row per message, not one per token. Padding side does not change the scores (position ids and
            the last position come from the attention mask, never from the pad token).
  "openai"  any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, llama.cpp server, ...): POST
            {base_url}/completions with max_tokens=1 and logprobs=top_logprobs, or {base_url}/chat/completions
            with logprobs=true (api="chat"). The top log-probabilities of the first answer token are mapped to
            label words (spaces stripped, case folded); a label word absent from them gets a floor.

`fit` trains nothing: it checks that the data's labels are classes of the prompt and records `classes_`
(the prompt's classes, sorted). With `calibrate=True` it also fits a temperature and per-class bias on the
label-token log-probabilities of the given data (per-class Platt scaling for multi-label data; the fits live
in `finesieve.models.calibration`). The default, `calibrate=False`, keeps the raw zero-shot numbers: that is
the baseline.

    from finesieve.models.prompt_baseline import PromptBaseline
    scorer = PromptBaseline("Qwen/Qwen2.5-0.5B-Instruct", prompt="builtin:davidson").fit(texts, labels)
    proba = scorer.predict_proba(["some tweet"])          # (1, 3) in scorer.classes_ order
    PromptBaseline("gpt-4o-mini", backend="openai", api="chat", base_url="https://api.openai.com/v1")

`save(directory)` writes the config and a copy of the prompt; the model weights are not copied (the scorer
points to a model by id or path).
"""

from __future__ import annotations

import inspect
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import logsumexp, softmax

from finesieve.data.errors import ConfigError, FinesieveError
from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts, label_tuples, prepare_inputs
from finesieve.models.calibration import (
    apply_platt_per_class,
    apply_softmax_scaling,
    fit_platt_per_class,
    fit_softmax_scaling,
)
from finesieve.models.prompts import TaskPrompt, check_labels_match, load_prompt


class EndpointError(FinesieveError):
    """An HTTP endpoint refused a request or answered without what the scorer needs."""


class PromptBaselineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="'hf': Hugging Face model id or local path of a causal LM; 'openai': the model name to request."
    )
    prompt: str | TaskPrompt = Field(
        "builtin:davidson", description="Task prompt: builtin:NAME, a YAML path, or the prompt itself."
    )
    backend: Literal["hf", "openai"] = Field(
        "hf", description="Local Hugging Face model, or an OpenAI-compatible endpoint."
    )
    few_shot: bool = Field(False, description="Put the prompt's examples before the message.")
    calibrate: bool = Field(
        False, description="fit() also fits a temperature and bias on its data; False keeps the raw zero-shot scores."
    )
    max_message_chars: int = Field(
        2000, gt=0, description="Longer messages are cut to this many characters before rendering."
    )
    # hf backend
    batch_size: int = Field(8, gt=0, description="'hf': prompts per forward pass.")
    device: str = Field("cpu", description="'hf': torch device.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="'hf': weight dtype.")
    padding_side: Literal["left", "right"] = Field(
        "left", description="'hf': padding side of a batch (scores do not depend on it)."
    )
    progress: bool = Field(True, description="Show a progress bar while scoring.")
    # openai backend
    base_url: str = Field(
        "https://api.openai.com/v1", description="'openai': endpoint root ({base_url}/completions, /chat/completions)."
    )
    api: Literal["completions", "chat"] = Field(
        "completions", description="'openai': legacy completions, or chat (one user message)."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="'openai': environment variable holding the API key (none sent when unset)."
    )
    top_logprobs: int = Field(
        20, ge=1, le=20, description="'openai': alternatives asked for the first token (OpenAI's legacy API allows 5)."
    )
    missing_logprob: float | None = Field(
        None,
        description=(
            "'openai': log-probability of a label word absent from the top alternatives; None uses the lowest returned one (an upper bound)."
        ),
    )
    timeout_s: float = Field(30.0, gt=0, description="'openai': seconds per request.")
    max_retries: int = Field(
        4, ge=0, description="'openai': retries on 429, 5xx and connection errors, with exponential backoff."
    )
    backoff_s: float = Field(
        1.0, ge=0, description="'openai': first backoff in seconds (doubles each retry; Retry-After wins when given)."
    )
    concurrency: int = Field(4, ge=1, le=64, description="'openai': requests in flight at once.")

    @model_validator(mode="after")
    def _check(self) -> PromptBaselineConfig:
        if self.backend == "hf" and self.api != "completions":
            raise ValueError(
                f"api={self.api!r} applies to backend='openai' only, but backend='hf': drop api or set backend='openai'"
            )
        return self


class PromptBaseline:
    """Scorer: `fit(texts, labels)` records classes (and an optional calibration); `predict_proba(texts)` scores."""

    kind = "prompt_baseline"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(
        self,
        model: str,
        prompt: str | TaskPrompt = "builtin:davidson",
        backend: str = "hf",
        few_shot: bool = False,
        calibrate: bool = False,
        max_message_chars: int = 2000,
        batch_size: int = 8,
        device: str = "cpu",
        dtype: str = "float32",
        padding_side: str = "left",
        progress: bool = True,
        base_url: str = "https://api.openai.com/v1",
        api: str = "completions",
        api_key_env: str = "OPENAI_API_KEY",
        top_logprobs: int = 20,
        missing_logprob: float | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        concurrency: int = 4,
    ):
        self.model = model
        self.prompt = prompt
        self.backend = backend
        self.few_shot = few_shot
        self.calibrate = calibrate
        self.max_message_chars = max_message_chars
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.padding_side = padding_side
        self.progress = progress
        self.base_url = base_url
        self.api = api
        self.api_key_env = api_key_env
        self.top_logprobs = top_logprobs
        self.missing_logprob = missing_logprob
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency

    @classmethod
    def from_config(cls, config: PromptBaselineConfig) -> PromptBaseline:
        return cls(**dict(config))

    def get_config(self) -> PromptBaselineConfig:
        return PromptBaselineConfig(**{name: getattr(self, name) for name in PromptBaselineConfig.model_fields})

    # ------------------------------------------------------------------------------------------- fit / score

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> PromptBaseline:
        """Record the prompt's classes (no training); with `calibrate=True`, fit the calibration on (texts, labels)."""
        config = self.get_config()  # validates the arguments, with messages naming the field
        texts, _, multilabel = check_fit_inputs(texts, labels, multilabel)
        self.prompt_ = config.prompt if isinstance(config.prompt, TaskPrompt) else load_prompt(config.prompt)
        multilabel = check_labels_match(self.prompt_, labels, multilabel)
        self.calibration_ = None
        self.classes_ = np.array(self.prompt_.classes)
        self.multilabel_ = multilabel
        if self.backend == "hf":
            self._hf_setup()  # tokenizer checks now (label words with one first token each), weights on first use
        if self.calibrate:
            if not texts:
                raise ValueError("calibrate=True needs labelled texts to fit on: pass some, or set calibrate=False")
            lp = self.label_logprobs(texts)
            classes = self.classes_.tolist()
            tuples = label_tuples(labels, multilabel)
            if multilabel:
                odds = _log_odds(softmax(lp, axis=1))
                self.calibration_ = fit_platt_per_class(odds, np.array([[c in t for c in classes] for t in tuples]))
            else:
                temperature, bias = fit_softmax_scaling(lp, np.array([classes.index(t[0]) for t in tuples]))
                self.calibration_ = {"kind": "softmax", "temperature": temperature, "bias": bias.tolist()}
        return self

    def label_logprobs(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n_classes) log-probability of each label word's first token as the answer, in `classes_` order.

        'hf': from the full next-token distribution at the last prompt position. 'openai': from the returned
        top log-probabilities (summed over case and space variants), floored for absent words.
        """
        check_is_fitted(self)
        texts = check_texts(texts)
        prompts = [self.prompt_.render(t[: self.max_message_chars], few_shot=self.few_shot) for t in texts]
        if not prompts:
            return np.zeros((0, len(self.classes_)))
        if self.backend == "hf":
            return self._hf_logprobs(prompts)
        return self._openai_logprobs(prompts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self)
        lp = self.label_logprobs(prepare_inputs(self, texts))
        cal = self.calibration_
        if cal is None:
            return softmax(lp, axis=1) if len(lp) else lp
        if cal["kind"] == "softmax":
            return apply_softmax_scaling(lp, cal["temperature"], np.array(cal["bias"]))
        return apply_platt_per_class(_log_odds(softmax(lp, axis=1)), cal)

    # ------------------------------------------------------------------------------------------- hf backend

    def _hf_setup(self) -> None:
        """Load the tokenizer and find the token id each label word starts with after "Answer:"."""
        if getattr(self, "_tokenizer", None) is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        tok = self._tokenizer
        with_special = tok("Answer:")["input_ids"]
        plain = tok("Answer:", add_special_tokens=False)["input_ids"]
        # Keep the tokenizer's leading special tokens (BOS) but never a trailing EOS: the answer follows the prompt.
        starts = [i for i in range(len(with_special) - len(plain) + 1) if with_special[i : i + len(plain)] == plain]
        self._lead = with_special[: starts[0]] if starts else []
        words = [self.prompt_.label_words[c] for c in self.classes_]
        probe = self.prompt_.render("a message", few_shot=self.few_shot)
        base = tok(probe, add_special_tokens=False)["input_ids"]
        ids, space = [], []
        for word in words:
            # The prompt ends with "Answer:" and the answer follows a space; the tokenizer decides whether that
            # space is part of the word's first token (GPT-2 "Ġhate", SentencePiece "▁hate"), dropped (word-level
            # pre-tokenizers) or a token of its own, which then belongs to the prompt: the word starts after it.
            full = tok(probe + " " + word, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base or len(full) == len(base):
                raise ConfigError(
                    f"tokenizer of {self.model} merges the label word {word!r} into the prompt's last token: "
                    "end the prompt differently or choose another label word"
                )
            rest = full[len(base) :]
            if len(rest) > 1 and not tok.decode(rest[:1]).strip():
                space, rest = rest[:1], rest[1:]
            ids.append(rest[0])
        self._answer_prefix = space
        tokens = tok.convert_ids_to_tokens(ids)
        clashes = [
            (words[i], words[j], tokens[i]) for i in range(len(ids)) for j in range(i + 1, len(ids)) if ids[i] == ids[j]
        ]
        if clashes:
            detail = "; ".join(f"{a!r} and {b!r} both start with token {t!r}" for a, b, t in clashes)
            raise ConfigError(
                f"label words cannot be told apart by their first token with the tokenizer of {self.model}: {detail}. "
                f"Change label_words in prompt '{self.prompt_.name}' so each starts differently"
            )
        self.label_token_ids_ = ids
        self.label_tokens_ = tokens

    def _hf_model(self):
        if getattr(self, "_model", None) is None:
            import torch
            from transformers import AutoModelForCausalLM

            dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
            self._model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype).to(self.device).eval()
        return self._model

    def _hf_logprobs(self, prompts: list[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        if getattr(self, "_tokenizer", None) is None or not hasattr(self, "label_token_ids_"):
            self._hf_setup()
        model, tok = self._hf_model(), self._tokenizer
        encoded = [self._lead + tok(p, add_special_tokens=False)["input_ids"] + self._answer_prefix for p in prompts]
        limit = getattr(model.config, "max_position_embeddings", None)
        longest = max(len(e) for e in encoded)
        if limit and longest > limit:
            raise ConfigError(
                f"a prompt is {longest} tokens long, more than {self.model} takes ({limit}): "
                "lower max_message_chars, turn off few_shot, or shorten the prompt"
            )
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        label_ids = torch.tensor(self.label_token_ids_)
        order = np.argsort([-len(e) for e in encoded], kind="stable")  # similar lengths together: less padding
        out = np.zeros((len(prompts), len(label_ids)))
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(order), self.batch_size),
                desc="prompt baseline",
                unit="batch",
                disable=not self.progress,
                leave=False,
            ):
                rows = order[start : start + self.batch_size]
                seqs = [encoded[i] for i in rows]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for i, s in enumerate(seqs):
                    span = slice(width - len(s), width) if self.padding_side == "left" else slice(0, len(s))
                    ids[i, span] = torch.tensor(s)
                    mask[i, span] = 1
                last = self._last_token_logits(model, ids.to(self.device), mask.to(self.device))  # (b, vocab)
                logp = torch.log_softmax(last.float(), dim=-1)[:, label_ids.to(last.device)]  # (b, k)
                out[rows] = logp.cpu().numpy()
        return out

    @staticmethod
    def _last_token_logits(model, ids, mask):
        """Logits at the last real position of each row, (batch, vocab), computing the LM head on that row only.

        Position ids count real tokens only, so a left-padded prompt gets the same positions as an unpadded one;
        the last real position comes from the attention mask (the pad token may equal EOS, so it cannot be used).
        """
        import torch

        width = ids.shape[1]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        last = width - 1 - mask.flip(-1).argmax(-1)  # (b,) index of the last 1 in each row
        params = inspect.signature(model.forward).parameters
        if "logits_to_keep" in params:
            keep = 1 if bool((last == width - 1).all()) else last[:, None]  # int: the last column; (b, 1): per row
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=keep, use_cache=False
            ).logits
            return logits[:, -1]
        # Older or custom models: run the body, gather the last hidden state, apply the output embeddings to it.
        hidden = model.base_model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        rows = hidden[torch.arange(len(ids), device=ids.device), last]  # (b, hidden)
        return model.get_output_embeddings()(rows)

    # ------------------------------------------------------------------------------------------- openai backend

    def _openai_logprobs(self, prompts: list[str]) -> np.ndarray:
        from tqdm.auto import tqdm

        words = [self.prompt_.label_words[c] for c in self.classes_]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            tops = list(
                tqdm(
                    pool.map(self._first_token_top_logprobs, prompts),
                    total=len(prompts),
                    desc="prompt baseline",
                    unit="msg",
                    disable=not self.progress,
                    leave=False,
                )
            )
        return np.array([map_top_logprobs(top, words, self.missing_logprob) for top in tops])

    def _first_token_top_logprobs(self, prompt: str) -> dict[str, float]:
        """{token: logprob} of the first generated token's alternatives (several tokens may share a string)."""
        base = self.base_url.rstrip("/")
        if self.api == "chat":
            payload = {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
            body = self._post(f"{base}/chat/completions", payload)
            try:
                first = body["choices"][0]["logprobs"]["content"][0]
                pairs = [(alt["token"], alt["logprob"]) for alt in first["top_logprobs"]]
            except (KeyError, IndexError, TypeError):
                raise EndpointError(
                    f"{base}/chat/completions answered without logprobs.content[0].top_logprobs "
                    f"({_excerpt(json.dumps(body))}): use a model and server that return log-probabilities"
                ) from None
        else:
            payload = {
                "model": self.model,
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": self.top_logprobs,
            }
            body = self._post(f"{base}/completions", payload)
            try:
                pairs = list(body["choices"][0]["logprobs"]["top_logprobs"][0].items())
            except (KeyError, IndexError, TypeError, AttributeError):
                raise EndpointError(
                    f"{base}/completions answered without logprobs.top_logprobs[0] ({_excerpt(json.dumps(body))}): "
                    "use a server that supports the legacy completions 'logprobs' option, or api='chat'"
                ) from None
        top: dict[str, float] = {}
        for token, logprob in pairs:
            if logprob is None:
                continue
            top[token] = float(np.logaddexp(top[token], logprob)) if token in top else float(logprob)
        return top

    def _post(self, url: str, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(payload).encode()
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                detail = _excerpt(err.read().decode("utf-8", "replace"))
                if err.code in (401, 403):
                    raise EndpointError(
                        f"{url} refused the request ({err.code} {err.reason}: {detail}): set the environment "
                        f"variable {self.api_key_env} (api_key_env) to a valid API key for this endpoint"
                    ) from None
                if err.code != 429 and err.code < 500:
                    raise EndpointError(
                        f"{url} rejected the request ({err.code} {err.reason}: {detail}): check model "
                        f"{self.model!r}, api={self.api!r} and top_logprobs={self.top_logprobs}"
                    ) from None
                problem = f"{err.code} {err.reason}: {detail}"
                retry_after = err.headers.get("Retry-After") if err.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = float(retry_after)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                problem = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if attempt < self.max_retries:
                time.sleep(wait)
        raise EndpointError(
            f"{url} failed after {self.max_retries + 1} attempts (last: {problem}): check base_url and the "
            "server, or raise max_retries / timeout_s"
        )

    # ------------------------------------------------------------------------------------------- save / load

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "scorer_config.json").write_text(
            json.dumps(self.get_config().model_dump(), indent=2, sort_keys=True)
        )
        # The prompt as scored, whatever happens to the file or built-in it came from.
        (directory / "prompt.yaml").write_text(self.prompt_.to_yaml(), encoding="utf-8")
        state = {
            "classes": self.classes_.tolist(),
            "multilabel": self.multilabel_,
            "calibration": self.calibration_,
            "label_tokens": getattr(self, "label_tokens_", None),
            "label_token_ids": getattr(self, "label_token_ids_", None),
            "note": "Model weights are not copied: 'model' in scorer_config.json names them.",
        }
        (directory / "prompt_baseline.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> PromptBaseline:
        directory = Path(directory)
        config = PromptBaselineConfig(**json.loads((directory / "scorer_config.json").read_text()))
        state = json.loads((directory / "prompt_baseline.json").read_text())
        scorer = cls.from_config(config)
        scorer.prompt_ = load_prompt(directory / "prompt.yaml")
        scorer.classes_, scorer.multilabel_ = np.array(state["classes"]), state["multilabel"]
        scorer.calibration_ = state["calibration"]
        if scorer.backend == "hf":
            # As fit does: the tokenizer's label tokens are set up now, not on the first predict_proba, and they
            # must be the ones the scorer was saved with (the model's files may have changed since).
            scorer._hf_setup()
            saved = state.get("label_token_ids")
            if saved is not None and list(saved) != list(scorer.label_token_ids_):
                raise ConfigError(
                    f"{directory}: the tokenizer of {scorer.model} now starts the label words with tokens "
                    f"{scorer.label_tokens_}, not {state.get('label_tokens')} as when this scorer was saved: the model "
                    "files changed. Fix: point 'model' in scorer_config.json at the model the run was made with"
                )
        return scorer


# ----------------------------------------------------------------------------------------------- helpers


def map_top_logprobs(top: dict[str, float], words: Sequence[str], missing_logprob: float | None = None) -> np.ndarray:
    """Log-probability of each label word (k,) from a first token's top alternatives {token: logprob}.

    A token counts for a word when, stripped of spaces and case-folded, it equals the word or is the start of
    exactly one label word (at least 3 characters, or the whole word): " Hate", "hate" and "HATE" all count for
    "hate", " off" for "offplatform". Variants of one word are summed. A word none of them matches gets
    `missing_logprob`, or by default the lowest returned log-probability (its true value is at most that).
    """
    keys = [w.casefold() for w in words]
    found: list[list[float]] = [[] for _ in words]
    for token, logprob in top.items():
        t = token.strip().casefold()
        if not t:
            continue
        if t in keys:
            found[keys.index(t)].append(logprob)
            continue
        starts = [j for j, k in enumerate(keys) if k.startswith(t)]
        if len(starts) == 1 and len(t) >= min(3, len(keys[starts[0]])):
            found[starts[0]].append(logprob)
    floor = missing_logprob if missing_logprob is not None else (min(top.values()) if top else -30.0)
    return np.array([float(logsumexp(f)) if f else floor for f in found])


def _log_odds(p: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
