"""Score a labelled dataset with a prompt baseline (nothing is trained) and save it as a run, the figure every
fine-tune is compared against. Two kinds: `embedding` (label definitions vs message embeddings, the packaged
MiniLM, offline) and `llm` (label-token probabilities of a causal LM, local or at an OpenAI-compatible endpoint).

    fitted, prompt = fit_prompt_baseline(dataset, kind="embedding", positive=["hate_speech"], out="runs/baseline")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finesieve.data.dataset import Dataset
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.prompts import prompt_for_classes
from finesieve.train.recipe import FittedRun, fit_and_save

BASELINE_KINDS = {"embedding": "embedding_zero_shot", "llm": "prompt_baseline"}  # kind -> the run's kind


def prompt_baseline(
    kind: str,
    *,
    prompt: str,
    model: str | None = None,
    backend: str = "hf",
    base_url: str | None = None,
    api: str = "completions",
    few_shot: bool = False,
):
    """An unfitted prompt baseline of `kind` (a key of BASELINE_KINDS); `llm` needs `model`."""
    if kind == "embedding":
        from finesieve.models.embedding_zero_shot import EmbeddingZeroShot

        return EmbeddingZeroShot(prompt=prompt, model=model, few_shot=few_shot, progress=False)
    from finesieve.models.prompt_baseline import PromptBaseline

    extra = {"base_url": base_url} if base_url else {}
    return PromptBaseline(model, prompt=prompt, backend=backend, few_shot=few_shot, api=api, progress=False, **extra)


def fit_prompt_baseline(
    dataset: Dataset,
    *,
    kind: str,
    positive: Sequence[str],
    out: str | Path,
    prompt: str | None = None,
    model: str | None = None,
    backend: str = "hf",
    base_url: str | None = None,
    api: str = "completions",
    few_shot: bool = False,
    split_config: SplitConfig | None = None,
    overwrite: bool = False,
) -> tuple[FittedRun, str]:
    """Split, threshold on validation, evaluate on test, save the run. `prompt` defaults to the built-in prompt
    that defines the data's classes. Returns the run and the prompt used."""
    task_prompt = prompt or prompt_for_classes(dataset.classes)
    scorer = prompt_baseline(
        kind, prompt=task_prompt, model=model, backend=backend, base_url=base_url, api=api, few_shot=few_shot
    )
    splits = make_splits(dataset, split_config or SplitConfig())
    fitted = fit_and_save(
        scorer,
        BASELINE_KINDS[kind],
        splits,
        positive=positive,
        out=out,
        name=f"{kind} {'few' if few_shot else 'zero'}-shot",
        overwrite=overwrite,
    )
    return fitted, task_prompt
