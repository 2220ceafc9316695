"""The scorer contract, checked the same way for every scorer (scikit-learn's `check_estimator`).

    from finesieve.models.checks import check_scorer, check_fitted_scorer

    # A scorer that fits: every rule, from the unfitted error to a refit from its config.
    scorer = check_scorer(lambda: TfidfLogReg(), texts, labels, probe, tmp_dir=tmp_path)
    # A scorer that is built fitted (the cascade) or needs no fit: the rules that apply to a fitted scorer.
    check_fitted_scorer(cascade, probe, tmp_dir=tmp_path, reload_atol=1e-5)

The rules, each named in the error when it breaks (see `RULES`):

    not-fitted            predict_proba (and save) of an unfitted scorer raise NotFittedError naming the class
                          and saying to call fit
    init-stores-arguments every constructor argument is an attribute of the same name; nothing ends in `_` yet
    fit-returns-self      fit(texts, labels) returns the scorer itself
    fit-keeps-arguments   fit leaves the constructor's arguments as they were (it writes learned state only)
    learned-attributes    what fit adds ends in `_` (or starts with `_`, for private caches)
    classes               classes_ is a 1-D array of unique str, sorted (or the order given), covering the labels
    multilabel            multilabel_ is a bool that says what the task is
    probabilities         predict_proba gives a float ndarray (n, len(classes_)) in [0, 1]; single-label rows sum
                          to 1 within 1e-6
    bare-string           a bare str is refused with a TypeError/ValueError that says to wrap it in a list;
                          a non-str item is refused too
    empty-input           an empty list gives shape (0, len(classes_))
    batch-invariance      a text's scores do not depend on the other texts of the batch or on its size: one at a
                          time, all at once and twice as many agree within `batch_atol`; a second call repeats
    order-invariance      a permuted input gives the permuted output (within `batch_atol`)
    predict-keeps-state   scoring leaves the public attributes as they were, on a fitted and on a loaded scorer
                          (private caches, `_name`, may fill)
    save-load             save(dir) then type(scorer).load(dir), as `finesieve.runs` does, gives the same class,
                          classes_, multilabel_, config and probabilities (within `reload_atol`); so does the
                          loaded scorer saved and loaded again, and a second save over the same folder
    kind                  the class names its run kind (`kind`), which `finesieve.models.kinds` maps back to it
    config                get_config() is a pydantic model that forbids unknown keys and survives a JSON round trip
    config-rebuild        a scorer rebuilt from the config has the same config and, fitted the same way
                          (`refit=True`), the same probabilities (within `refit_atol`)

Every rule runs even when an earlier one breaks (except when fit itself fails), and all the broken rules are
reported in one `ScorerContractError`, an AssertionError, so pytest shows it as a failed test.
Tolerances are per scorer: float32 networks pad batches, so their scores move by ~1e-6 with the batch.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from finesieve.models.base import NotFittedError, Scorer, label_tuples

RULES = (
    "not-fitted",
    "init-stores-arguments",
    "fit-returns-self",
    "fit-keeps-arguments",
    "learned-attributes",
    "classes",
    "multilabel",
    "probabilities",
    "bare-string",
    "empty-input",
    "batch-invariance",
    "order-invariance",
    "predict-keeps-state",
    "save-load",
    "kind",
    "config",
    "config-rebuild",
)
SUM_ATOL = 1e-6  # single-label rows sum to 1 within this


class ScorerContractError(AssertionError):
    """A scorer breaks one or more rules of the contract; `broken` maps each rule to what was wrong."""

    def __init__(self, name: str, broken: dict[str, str]):
        self.name = name
        self.broken = broken
        lines = "\n".join(f"  - {rule}: {detail}" for rule, detail in broken.items())
        super().__init__(f"{name} breaks {len(broken)} rule(s) of the scorer contract ({', '.join(broken)}):\n{lines}")


class _Rules:
    """Runs each rule, collecting what breaks instead of stopping at the first."""

    def __init__(self, name: str):
        self.name = name
        self.broken: dict[str, str] = {}

    def check(self, rule: str, fn: Callable[[], None]) -> None:
        assert rule in RULES, rule
        try:
            fn()
        except _Broken as err:
            self._add(rule, str(err))
        except Exception as err:  # a crash inside a rule breaks that rule; the others still run
            self._add(rule, f"raised {type(err).__name__}: {_cut(str(err))}")

    def _add(self, rule: str, detail: str) -> None:
        self.broken[rule] = f"{self.broken[rule]}; {detail}" if rule in self.broken else detail

    def raise_if_broken(self) -> None:
        if self.broken:
            raise ScorerContractError(self.name, self.broken)


class _Broken(Exception):
    """Raised inside a rule: the message says what the scorer did wrong."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Broken(message)


def _label(scorer, name: str | None) -> str:
    cls = type(scorer).__name__
    return f"{cls} ({name})" if name and name != cls else cls


def _cut(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------------------------- entry points


def check_scorer(
    make_unfitted: Callable[[], Scorer],
    fit_texts: Sequence[str],
    fit_labels: Sequence,
    probe_texts: Sequence[str],
    *,
    tmp_dir: str | Path,
    multilabel: bool = False,
    fit_kwargs: dict | None = None,
    expected_classes: Sequence[str] | None = None,
    batch_atol: float = 1e-6,
    reload_atol: float = 1e-6,
    refit: bool = True,
    refit_atol: float | None = None,
    rebuild: Callable[[BaseModel], Scorer] | None = None,
    name: str | None = None,
) -> Scorer:
    """Check every rule of the contract on a scorer that fits; returns the fitted scorer.

    make_unfitted: builds a fresh, unfitted scorer (called once, twice with `refit` and no `rebuild`).
    fit_texts, fit_labels: what to fit on (labels: one class name each, or collections with `multilabel`).
    probe_texts: texts to score, 8-20 of varied length: each is also scored one at a time.
    tmp_dir: an empty folder for save/load.
    fit_kwargs: extra keyword arguments for fit, e.g. {"positive": ["spam"]}; `multilabel` is passed to fit.
    expected_classes: the documented `classes_` order when it is not sorted (default: sorted).
    batch_atol / reload_atol / refit_atol: the tolerances this scorer declares for batch and order invariance,
    save/load and a refit from its config (refit_atol defaults to batch_atol).
    refit: also fit a scorer rebuilt from get_config() and compare (set False where a fit is expensive).
    rebuild: config -> unfitted scorer; default the class's `from_config`, and the rule is skipped without one.
    name: how the scorer is named in errors (default its class name).
    """
    scorer = make_unfitted()
    rules = _Rules(_label(scorer, name))
    before = dict(vars(scorer))
    rules.check("not-fitted", lambda: _not_fitted(scorer, probe_texts, Path(tmp_dir) / "unfitted"))
    rules.check("init-stores-arguments", lambda: _init_stores_arguments(scorer, before))
    fit_kwargs = dict(fit_kwargs or {})
    try:
        fitted = scorer.fit(list(fit_texts), list(fit_labels), multilabel=multilabel, **fit_kwargs)
    except Exception as err:
        rules._add("fit-returns-self", f"fit raised {type(err).__name__}: {_cut(str(err))}")
        rules.raise_if_broken()
    rules.check(
        "fit-returns-self",
        lambda: _require(
            fitted is scorer,
            f"fit returned {type(fitted).__name__} {fitted!r:.80}, not the scorer itself: end fit with `return self`",
        ),
    )
    rules.check("fit-keeps-arguments", lambda: _fit_keeps_arguments(scorer, before))
    rules.check("learned-attributes", lambda: _learned_attributes(scorer, before))
    labelled = sorted({c for t in label_tuples(list(fit_labels), multilabel) for c in t})
    proba = _check_fitted(
        rules,
        scorer,
        probe_texts,
        tmp_dir=Path(tmp_dir),
        multilabel=multilabel,
        expected_classes=expected_classes,
        labelled=labelled,
        batch_atol=batch_atol,
        reload_atol=reload_atol,
        rebuild=rebuild,
    )
    if refit and "config" not in rules.broken:
        rebuild = rebuild or getattr(type(scorer), "from_config", None)
        if rebuild is not None and proba is not None:
            rules.check(
                "config-rebuild",
                lambda: _refit(
                    scorer,
                    rebuild,
                    fit_texts,
                    fit_labels,
                    multilabel,
                    fit_kwargs,
                    probe_texts,
                    proba,
                    batch_atol if refit_atol is None else refit_atol,
                ),
            )
    rules.raise_if_broken()
    return scorer


def check_fitted_scorer(
    scorer: Scorer,
    probe_texts: Sequence[str],
    *,
    tmp_dir: str | Path,
    multilabel: bool = False,
    expected_classes: Sequence[str] | None = None,
    batch_atol: float = 1e-6,
    reload_atol: float = 1e-6,
    rebuild: Callable[[BaseModel], Scorer] | None = None,
    name: str | None = None,
) -> None:
    """Check the rules that apply to a scorer that is already fitted, or built fitted (the cascade): classes,
    probabilities, bare string, empty input, batch and order invariance, save/load and config.
    Arguments as for `check_scorer`."""
    rules = _Rules(_label(scorer, name))
    _check_fitted(
        rules,
        scorer,
        probe_texts,
        tmp_dir=Path(tmp_dir),
        multilabel=multilabel,
        expected_classes=expected_classes,
        labelled=None,
        batch_atol=batch_atol,
        reload_atol=reload_atol,
        rebuild=rebuild,
    )
    rules.raise_if_broken()


def _check_fitted(
    rules: _Rules,
    scorer,
    probe_texts,
    *,
    tmp_dir: Path,
    multilabel: bool,
    expected_classes,
    labelled: list[str] | None,
    batch_atol: float,
    reload_atol: float,
    rebuild,
) -> np.ndarray | None:
    """The rules on a fitted scorer; returns its probabilities on the probe texts (None when they are unusable)."""
    probe = list(probe_texts)
    rules.check("classes", lambda: _classes(scorer, expected_classes, labelled))
    rules.check(
        "multilabel",
        lambda: _require(
            isinstance(getattr(scorer, "multilabel_", None), (bool, np.bool_))
            and bool(scorer.multilabel_) == multilabel,
            f"multilabel_ is {getattr(scorer, 'multilabel_', '<missing>')!r}, expected {multilabel} (a bool)",
        ),
    )
    out: dict[str, np.ndarray] = {}
    state = _public_state(scorer)

    def probabilities():
        out["proba"] = _probabilities(scorer, probe, multilabel)

    rules.check("probabilities", probabilities)
    rules.check("bare-string", lambda: _bare_string(scorer, probe[0]))
    rules.check("empty-input", lambda: _empty_input(scorer))
    proba = out.get("proba")
    if proba is not None:
        rules.check("batch-invariance", lambda: _batch_invariance(scorer, probe, proba, batch_atol))
        rules.check("order-invariance", lambda: _order_invariance(scorer, probe, proba, batch_atol))
        rules.check("predict-keeps-state", lambda: _state_kept(scorer, state, "a fitted"))
        loaded: dict = {}
        rules.check("save-load", lambda: _save_load(scorer, probe, proba, tmp_dir / "saved", reload_atol, loaded))
        if loaded:
            rules.check("predict-keeps-state", lambda: _state_kept(loaded["scorer"], loaded["state"], "a loaded"))
    rules.check("kind", lambda: _kind(scorer))
    rules.check("config", lambda: _config(scorer, rebuild))
    return proba


# ----------------------------------------------------------------------------------------------- the rules


def _not_fitted(scorer, probe: Sequence[str], directory: Path) -> None:
    cls = type(scorer).__name__
    for what, call in (
        ("predict_proba", lambda: scorer.predict_proba(list(probe[:2]))),
        ("save", lambda: scorer.save(directory)),
    ):
        try:
            call()
        except NotFittedError as err:
            _require(
                cls in str(err) and "fit" in str(err),
                f"unfitted {what} raised NotFittedError({_cut(str(err))!r}), which should name {cls} and say "
                "to call fit: use finesieve.models.base.check_is_fitted",
            )
        except Exception as err:
            raise _Broken(
                f"unfitted {what} raised {type(err).__name__}({_cut(str(err))!r}) instead of NotFittedError: "
                "start it with finesieve.models.base.check_is_fitted(self)"
            ) from None
        else:
            raise _Broken(f"unfitted {what} returned instead of raising NotFittedError")


def _init_arguments(scorer) -> list[str]:
    params = inspect.signature(type(scorer).__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _init_stores_arguments(scorer, before: dict) -> None:
    missing = [a for a in _init_arguments(scorer) if a not in before]
    _require(
        not missing,
        f"constructor arguments {missing} are not stored as attributes of the same name: "
        "store each argument unchanged (self.x = x)",
    )
    learned = sorted(k for k in before if k.endswith("_") and not k.startswith("_"))
    _require(
        not learned, f"the constructor sets learned attributes {learned}: only fit (or load) sets names ending in _"
    )


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # arrays and other objects without a plain ==
        return False


def _fit_keeps_arguments(scorer, before: dict) -> None:
    changed = [a for a in _init_arguments(scorer) if a in before and not _same(before[a], getattr(scorer, a, None))]
    _require(
        not changed,
        "fit changed constructor argument(s) "
        + ", ".join(f"{a} ({before[a]!r:.60} -> {getattr(scorer, a, None)!r:.60})" for a in changed)
        + ": keep the arguments as given and put what fit resolves in a learned attribute ending in _",
    )


def _learned_attributes(scorer, before: dict) -> None:
    added = sorted(k for k in vars(scorer) if k not in before)
    bad = [k for k in added if not k.endswith("_") and not k.startswith("_")]
    _require(not bad, f"fit added public attributes {bad} that do not end in _: learned state ends in _ (classes_)")
    _require("classes_" in vars(scorer) or hasattr(scorer, "classes_"), "fit did not set classes_")


def _classes(scorer, expected: Sequence[str] | None, labelled: list[str] | None) -> None:
    classes = getattr(scorer, "classes_", None)
    _require(
        isinstance(classes, np.ndarray) and classes.ndim == 1,
        f"classes_ is {type(classes).__name__} {classes!r:.80}, expected a 1-D numpy array of class names",
    )
    names = classes.tolist()
    _require(
        all(isinstance(c, str) for c in names), f"classes_ holds non-str items {names}: use the class names as str"
    )
    _require(len(set(names)) == len(names), f"classes_ repeats a class: {names}")
    if expected is not None:
        _require(names == list(expected), f"classes_ is {names}, expected {list(expected)} (the documented order)")
    else:
        _require(
            names == sorted(names),
            f"classes_ is {names}, not sorted: sort the classes, or document the order and pass it as expected_classes",
        )
    if labelled is not None:
        unknown = [c for c in labelled if c not in names]
        _require(not unknown, f"labels {unknown} of the training data are not in classes_ {names}")


def _probabilities(scorer, probe: list[str], multilabel: bool) -> np.ndarray:
    proba = scorer.predict_proba(probe)
    _require(isinstance(proba, np.ndarray), f"predict_proba returned {type(proba).__name__}, expected a numpy array")
    k = len(scorer.classes_)
    _require(
        proba.shape == (len(probe), k),
        f"predict_proba gave shape {proba.shape} for {len(probe)} texts, expected "
        f"({len(probe)}, {k}) (n_texts, len(classes_))",
    )
    _require(np.issubdtype(proba.dtype, np.floating), f"predict_proba gave dtype {proba.dtype}, expected floats")
    _require(bool(np.isfinite(proba).all()), "predict_proba gave NaN or infinite values")
    lo, hi = float(proba.min(initial=0.0)), float(proba.max(initial=0.0))
    _require(lo >= 0.0 and hi <= 1.0, f"probabilities outside [0, 1] (min {lo:.6g}, max {hi:.6g})")
    if not multilabel and len(proba):
        worst = int(np.argmax(np.abs(proba.sum(axis=1) - 1.0)))
        total = float(proba[worst].sum())
        _require(
            abs(total - 1.0) <= SUM_ATOL,
            f"single-label rows must sum to 1 within {SUM_ATOL}: row {worst} "
            f"({probe[worst][:40]!r}) sums to {total:.9f}",
        )
    return proba


def _bare_string(scorer, text: str) -> None:
    for bad, what in ((text, "a bare str"), ([text, 3], "a list holding an int")):
        try:
            scorer.predict_proba(bad)
        except (TypeError, ValueError) as err:
            if what == "a bare str":
                _require(
                    "list" in str(err),
                    f"{what} was refused with {type(err).__name__}({_cut(str(err))!r}), "
                    "which should tell the caller to wrap it in a list",
                )
        except Exception as err:
            raise _Broken(
                f"{what} raised {type(err).__name__}({_cut(str(err))!r}); expected a TypeError or ValueError "
                "that says what to pass: use finesieve.models.base.check_texts"
            ) from None
        else:
            raise _Broken(
                f"{what} was scored instead of refused (a str is scored character by character): "
                "use finesieve.models.base.check_texts"
            )


def _empty_input(scorer) -> None:
    proba = scorer.predict_proba([])
    k = len(scorer.classes_)
    _require(
        isinstance(proba, np.ndarray) and proba.shape == (0, k),
        f"predict_proba([]) gave {type(proba).__name__} of shape {getattr(proba, 'shape', None)}, expected (0, {k})",
    )


def _close(got: np.ndarray, want: np.ndarray, atol: float, probe: list[str], what: str) -> None:
    got = np.asarray(got, dtype=float)
    _require(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}")
    diff = np.abs(got - want)
    if diff.size and float(diff.max()) > atol:
        row = int(np.unravel_index(np.argmax(diff), diff.shape)[0])
        raise _Broken(
            f"{what}: scores differ by up to {float(diff.max()):.3g} (tolerance {atol:g}), e.g. text "
            f"{row} ({probe[row][:40]!r}): {np.round(got[row], 6).tolist()} vs {np.round(want[row], 6).tolist()}"
        )


def _batch_invariance(scorer, probe: list[str], proba: np.ndarray, atol: float) -> None:
    _close(scorer.predict_proba(probe), proba, atol, probe, "the same call twice")
    one_by_one = np.vstack([scorer.predict_proba([t]) for t in probe])
    _close(one_by_one, proba, atol, probe, "one text at a time vs all at once")
    doubled = scorer.predict_proba(probe[::-1] + probe)  # a batch twice as large, each text beside others
    _close(doubled[len(probe) :], proba, atol, probe, "all at once vs in a batch twice as large")


def _order_invariance(scorer, probe: list[str], proba: np.ndarray, atol: float) -> None:
    perm = np.random.default_rng(0).permutation(len(probe))
    permuted = scorer.predict_proba([probe[i] for i in perm])
    out = np.empty_like(np.asarray(permuted, dtype=float))
    out[perm] = permuted
    _close(out, proba, atol, probe, "a permuted input, un-permuted")


def _save_load(scorer, probe: list[str], proba: np.ndarray, directory: Path, atol: float, loaded: dict) -> None:
    """`loaded` gets the loaded scorer and its public state before it scored, for predict-keeps-state."""
    scorer.save(directory)
    again = type(scorer).load(directory)
    _require(type(again) is type(scorer), f"{type(scorer).__name__}.load returned {type(again).__name__}")
    loaded_state = _public_state(again)
    _require(
        list(map(str, again.classes_)) == list(map(str, scorer.classes_)),
        f"classes_ after load {list(again.classes_)} differ from {list(scorer.classes_)}",
    )
    _require(bool(again.multilabel_) == bool(scorer.multilabel_), "multilabel_ differs after load")
    _close(again.predict_proba(probe), proba, atol, probe, "after save and load")
    loaded.update(scorer=again, state=loaded_state)
    if hasattr(scorer, "get_config"):
        a, b = scorer.get_config(), again.get_config()
        _require(_same(a, b), f"get_config() after load differs: {_config_diff(a, b)}")
    # A loaded scorer saves again (a run copied, a cascade built from loaded stages), and a folder can be saved over.
    again.save(directory.with_name(directory.name + "_again"))
    _close(
        type(scorer).load(directory.with_name(directory.name + "_again")).predict_proba(probe),
        proba,
        atol,
        probe,
        "saved, loaded, saved again and loaded",
    )
    scorer.save(directory)
    _close(type(scorer).load(directory).predict_proba(probe), proba, atol, probe, "saved twice into one folder")


def _public_state(scorer) -> dict:
    return {k: v for k, v in vars(scorer).items() if not k.startswith("_")}


def _state_kept(scorer, before: dict, which: str) -> None:
    after = _public_state(scorer)
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if not _same(before[k], after[k]))
    _require(
        not added and not changed,
        f"scoring {which} scorer set attribute(s) {added + changed}: predict_proba "
        "must not change the scorer (fit or load sets learned state; caches start with _)",
    )


def _config_diff(a, b) -> str:
    if isinstance(a, BaseModel) and isinstance(b, BaseModel):
        da, db = a.model_dump(), b.model_dump()
        fields = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
        return ", ".join(f"{k}: {da.get(k)!r:.60} -> {db.get(k)!r:.60}" for k in fields) or "types differ"
    return f"{a!r:.80} -> {b!r:.80}"


def _kind(scorer) -> None:
    from finesieve.models.cascade import Cascade
    from finesieve.models.ensemble import StackedEnsemble
    from finesieve.models.kinds import MODEL_KINDS, kind_of

    kind = getattr(type(scorer), "kind", None)
    _require(
        isinstance(kind, str) and kind,
        f"{type(scorer).__name__}.kind is {kind!r}: name the run kind the class "
        "is saved as (a class attribute, e.g. kind = 'tfidf')",
    )
    # Raises ConfigError when the table (runs.SCORER_KINDS' classes) does not map the kind back to the class.
    kind_of(scorer, {**MODEL_KINDS, Cascade.kind: Cascade, StackedEnsemble.kind: StackedEnsemble})


def _config(scorer, rebuild) -> None:
    _require(hasattr(scorer, "get_config"), "no get_config(): return the scorer's pydantic config (what runs record)")
    config = scorer.get_config()
    _require(isinstance(config, BaseModel), f"get_config() returned {type(config).__name__}, expected a pydantic model")
    cls = type(config)
    _require(
        cls.model_config.get("extra") == "forbid",
        f"{cls.__name__} accepts unknown keys: set model_config = ConfigDict(extra='forbid')",
    )
    again = cls.model_validate(json.loads(json.dumps(config.model_dump(mode="json"))))
    _require(again == config, f"{cls.__name__} does not survive a JSON round trip: {_config_diff(config, again)}")
    rebuild = rebuild or getattr(type(scorer), "from_config", None)
    if rebuild is not None:
        fresh = rebuild(again)
        _require(type(fresh) is type(scorer), f"rebuilding from the config gave {type(fresh).__name__}")
        _require(
            _same(fresh.get_config(), config),
            f"a scorer rebuilt from get_config() has another config: {_config_diff(config, fresh.get_config())}",
        )


def _refit(scorer, rebuild, fit_texts, fit_labels, multilabel, fit_kwargs, probe, proba, atol) -> None:
    fresh = rebuild(scorer.get_config())
    fresh.fit(list(fit_texts), list(fit_labels), multilabel=multilabel, **fit_kwargs)
    _require(list(fresh.classes_) == list(scorer.classes_), "a refit from get_config() gives other classes_")
    _close(fresh.predict_proba(probe), proba, atol, probe, "a scorer rebuilt from get_config() and fitted the same way")


__all__ = ["RULES", "ScorerContractError", "check_fitted_scorer", "check_scorer"]
