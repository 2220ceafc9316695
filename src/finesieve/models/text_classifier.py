"""A transformer body plus a small classification head: the network behind the fine-tuned scorer.

One module serves encoders (BERT, MiniLM: mean pooling over tokens, which is what sentence-transformers
models were trained with) and decoder LLMs (Llama, Qwen: the hidden state of the last real token). Either
way the head sees one vector per message and outputs one logit per class, so the loss is computed only
where it is needed and never over full-vocabulary logits. For decoders the head can start from the LM head
rows of each label's answer token ("label_tokens"), so training begins where the prompt baseline stands.

The head is a plain `nn.Linear` kept outside the PEFT wrapper and saved on its own (`head.pt`): PEFT then
never has to guess whether a head named `score` or `classifier` is trainable and saved (PEFT #310, #1070).

A LoRA/QLoRA model directory holds the adapter only (`adapter/`, PEFT format). Loading merges it into the base
by default (one matmul per layer when scoring); a merged body can no longer save its adapter (`save_pretrained`
would write full weights where the adapter belongs, PITFALLS "Saving and loading adapters"), so whoever loads
merged keeps the adapter's files (`read_adapter_files`) and hands them back to `save_classifier`.

    files = read_adapter_files("runs/ft/model/adapter")
    model = load_classifier("runs/ft/model", base, "encoder", "lora", 2, "mean", merge=True)
    save_classifier(model, tokenizer, "copy/model", "lora", adapter_files=files)   # the same adapter, byte for byte
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from finesieve.models.packaged import packaged_model_path

PACKAGED_PREFIX = "packaged:"
ADAPTER_DIR, BODY_DIR = "adapter", "body"  # inside a model directory: LoRA/QLoRA adapter, or a full fine-tune's body
ADAPTER_METHODS = ("lora", "qlora")
DECODER_TYPES = {
    "llama",
    "qwen2",
    "qwen3",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3",
    "phi",
    "phi3",
    "gpt2",
    "gpt_neox",
    "opt",
    "falcon",
    "smollm3",
    "olmo",
    "olmo2",
}


def resolve_model(model: str) -> str:
    """A model reference -> something `from_pretrained` loads. `packaged:NAME` (all-MiniLM-L6-v2, all-mpnet-base-v2:
    see finesieve.models.packaged) becomes a local folder, assembled on first use; a path or hub id passes through."""
    if model.startswith(PACKAGED_PREFIX):
        path = packaged_model_path(model[len(PACKAGED_PREFIX) :])
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk; never reach for the hub
        return str(path)
    return model


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_hash(model: str) -> str | None:
    """sha256 over the weight files a model reference loads (packaged, local path, or a hub id already in the
    local cache), by sorted relative name; None when no weight files can be found without the network."""
    folder = Path(resolve_model(model))
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not cached, not a hub id, or no huggingface_hub: the hash is unknown, not an error
            return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def detect_architecture(model_path: str) -> Literal["encoder", "decoder"]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    archs = config.architectures or []
    if config.model_type in DECODER_TYPES or any(a.endswith("ForCausalLM") for a in archs):
        return "decoder"
    return "encoder"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token in each row, for left or right padding alike.

    Counting ones fails under left padding and pad_token == eos makes `input_ids == pad` wrong
    (transformers #35909, #35352): the largest index whose mask is 1 is right in every case.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


class TextClassifier(nn.Module):
    """body (AutoModel, optionally wrapped by PEFT) -> pooled vector (batch, hidden) -> score (batch, n_labels)."""

    def __init__(
        self, body: nn.Module, hidden_size: int, n_labels: int, pooling: Literal["mean", "last"], dropout: float = 0.1
    ):
        super().__init__()
        self.body = body
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(hidden_size, n_labels)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # hidden: (batch, seq, hidden); attention_mask: (batch, seq)
        if self.pooling == "last":
            idx = last_token_index(attention_mask)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, doc_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, n_labels) logits. With `doc_index` (rows,) the rows are windows of long documents
        (`models.chunking`): each document's window vectors are averaged, and the logits are per document."""
        out = self.body(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.pool(out.last_hidden_state, attention_mask)
        if doc_index is not None:
            n_docs = int(doc_index.max()) + 1
            sums = torch.zeros((n_docs, pooled.shape[1]), dtype=pooled.dtype, device=pooled.device)
            sums.index_add_(0, doc_index, pooled)
            counts = torch.bincount(doc_index, minlength=n_docs).clamp(min=1).to(pooled.dtype)
            pooled = sums / counts.unsqueeze(1)
        return self.score(self.dropout(pooled.to(self.score.weight.dtype)))


def load_body(model_path: str, architecture: str, quantize_4bit: bool = False) -> nn.Module:
    from transformers import AutoModel

    kwargs = {}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": 0}
    body = AutoModel.from_pretrained(model_path, **kwargs)
    return body


def init_head_from_label_tokens(model: TextClassifier, model_path: str, tokenizer, label_words: list[str]) -> None:
    """Start a decoder's head from the LM-head rows of each label's first answer token."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_path)
    weight = lm.get_output_embeddings().weight
    rows = []
    for word in label_words:
        ids = (
            tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            or tokenizer(word, add_special_tokens=False)["input_ids"]
        )
        rows.append(weight[ids[0]])
    with torch.no_grad():
        model.score.weight.copy_(torch.stack(rows).to(model.score.weight.dtype))
        model.score.bias.zero_()
    del lm


def is_peft_model(body: nn.Module) -> bool:
    """True for a body still wrapped by PEFT (adapters unmerged): it can save its own adapter."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(body, PeftModel)


def read_adapter_files(adapter_dir: str | Path) -> dict[str, bytes]:
    """Every file of a saved PEFT adapter folder (adapter_config.json, the weights, PEFT's README), by path relative
    to it. Small: a rank-16 LoRA on MiniLM is about 1 MB."""
    adapter_dir = Path(adapter_dir)
    files = {
        p.relative_to(adapter_dir).as_posix(): p.read_bytes() for p in sorted(adapter_dir.rglob("*")) if p.is_file()
    }
    if "adapter_config.json" not in files:
        raise FileNotFoundError(
            f"{adapter_dir} holds no adapter_config.json: it is not a PEFT adapter folder; point at "
            "a model directory written by FineTunedScorer.save with method lora or qlora"
        )
    return files


def write_adapter_files(files: dict[str, bytes], adapter_dir: str | Path) -> None:
    """Write an adapter folder from `read_adapter_files` output, replacing whatever was there."""
    adapter_dir = Path(adapter_dir)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    for name, data in files.items():
        path = adapter_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def save_classifier(
    model: TextClassifier, tokenizer, directory: str | Path, method: str, adapter_files: dict[str, bytes] | None = None
) -> None:
    """LoRA/QLoRA: the adapter only (PEFT format, loadable beside other adapters on one base); full: the body.

    An unmerged PEFT body saves its adapter itself. A merged one (`load_classifier(merge=True)`) cannot, so the
    files it was loaded from are written back byte for byte from `adapter_files`; a merged body is never written
    under `adapter/`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if method in ADAPTER_METHODS:
        if is_peft_model(model.body):
            model.body.save_pretrained(directory / ADAPTER_DIR)
        elif adapter_files:
            write_adapter_files(adapter_files, directory / ADAPTER_DIR)
        else:
            raise ValueError(
                f"cannot save a {method} model whose adapter was merged into the base without the "
                "adapter files it was loaded from: pass adapter_files=read_adapter_files(...), or load "
                "it with merge=False"
            )
    else:
        model.body.save_pretrained(directory / BODY_DIR)
    torch.save({k: v.detach().cpu() for k, v in model.score.state_dict().items()}, directory / "head.pt")
    tokenizer.save_pretrained(directory / "tokenizer")


def load_classifier(
    directory: str | Path,
    base_model: str,
    architecture: str,
    method: str,
    n_labels: int,
    pooling: str,
    merge: bool = True,
) -> TextClassifier:
    """A saved classifier in eval mode. LoRA/QLoRA: the base plus the adapter, merged into it when `merge` (faster
    scoring of one model) or kept as a PeftModel (several adapters on one base; saves its adapter itself)."""
    from transformers import AutoModel

    directory = Path(directory)
    if method in ADAPTER_METHODS:
        from peft import PeftModel

        base = AutoModel.from_pretrained(resolve_model(base_model))
        body = PeftModel.from_pretrained(base, directory / ADAPTER_DIR)
        if merge:
            body = body.merge_and_unload()  # scoring needs no separate adapter matmuls
    else:
        body = AutoModel.from_pretrained(directory / BODY_DIR)
    model = TextClassifier(body, body.config.hidden_size, n_labels, pooling)
    model.score.load_state_dict(torch.load(directory / "head.pt", map_location="cpu"))
    return model.eval()
