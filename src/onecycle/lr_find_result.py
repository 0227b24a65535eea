"""``LRFindResult``: the curves of one LR range test (``lr_finder.find``), its suggestions, how it
ended in plain words (``summary``, what ``lr_find`` prints), JSON, and the plot conveniences
(drawn by ``plots``, imported only when asked)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .smoothing import ema, smoothing_beta
from .suggest import DEFAULT_RULE, RULE_NAMES, flat_end, in_flat_region, one_cycle_range, stop_words

__all__ = ["LRFindResult"]


def _g(x: float | None) -> str:
    return "None" if x is None else f"{x:.3g}"


@dataclass
class LRFindResult:
    """Per-iteration curves of one LR range test. ``lrs`` is the head (last) group's LR;
    ``group_lrs[g][i]`` every group's. ``suggestions``: rule -> head-group LR (None when a rule
    cannot answer, see ``notes``); ``suggestion`` is ``suggestions[rule]``."""
    lrs: list[float]
    group_lrs: list[list[float]]
    losses: list[float]
    smooth_losses: list[float]
    val_losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    moms: list[float | None] = field(default_factory=list)
    suggestions: dict[str, float | None] = field(default_factory=dict)
    suggestion: float | None = None
    rule: str = DEFAULT_RULE
    stop_reason: str = ""
    notes: list[str] = field(default_factory=list)
    step_mode: str = "exp"
    num_it: int = 0
    run_suggestions: list[dict[str, float | None]] = field(default_factory=list)  # per run, when runs > 1
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # per metric; by name when missing

    @property
    def smooth_val_losses(self) -> list[float]:
        """The validation curve as the rules read it (the training curve's smoothing)."""
        return ema(self.val_losses, smoothing_beta(self.num_it or len(self.lrs)))

    def plot(self, smoothed: bool = True, n_skip: int = 0, n_skip_end: int = 0,
             save: str | os.PathLike | None = None, **kw: Any) -> Any:
        """Training loss, validation loss and every metric against the LR, the curves the rules read,
        the chosen suggestion marked on them; returns the Figure. ``kw``: ``ylim_factor``, ``band``,
        ``div`` (``plots.plot_finder``)."""
        from . import plots
        return plots.plot_finder(self, smoothed=smoothed, n_skip=n_skip, n_skip_end=n_skip_end, save=save, **kw)

    def plot_lr(self, save: str | os.PathLike | None = None, **kw: Any) -> Any:
        """fastai 0.7's ``sched.plot_lr()``: LR (every distinct group) and momentum against iterations."""
        from . import plots
        return plots.plot_lr(self, save=save, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def outcome(self) -> str:
        """How the test ended, in plain words ("ran all 100 steps, up to LR 10")."""
        return stop_words(self.stop_reason, self.lrs, self.num_it)

    def one_cycle_range(self, div: float = 25.0) -> tuple[float, float] | None:
        """The LRs a 1cycle fit at the suggestion runs through (``suggest.one_cycle_range``: from the peak
        / ``div``, fastai's default 25, up to the peak); None without a suggestion."""
        return None if self.suggestion is None else one_cycle_range(self.suggestion, div)

    def flat_rules(self) -> list[str]:
        """The rules whose answer lies in the flat start of the training loss (``suggest.flat_end``)."""
        return [k for k, v in self.suggestions.items() if in_flat_region(v, self.lrs, self.losses)]

    def summary(self) -> str:
        """What ``lr_find`` prints: how the test ended, every rule's suggestion in plain words with
        the chosen one marked and those in the flat region flagged, the 1cycle range, and the notes."""
        lines = [f"LR finder: {self.outcome}"]
        flat = self.flat_rules()
        for rule, lr in self.suggestions.items():
            mark = "  <- suggestion" if rule == self.rule else "  (flat region)" if rule in flat else ""
            lines.append(f"  {rule:<10} {_g(lr) if lr is not None else '-':<9} {RULE_NAMES.get(rule, '')}{mark}")
        span = self.one_cycle_range()
        if span is not None:
            lines.append(f"  1cycle range: {_g(span[0])} up to the peak {_g(span[1])} (div 25), then down")
        if flat:
            end = flat_end(self.lrs, self.losses)
            lines.append(f"  note: {', '.join(flat)} answered in the flat region (LR below {_g(end)}), where the "
                         "training loss had not started to fall")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def __repr__(self) -> str:  # the suggestions, not the curves (a notebook shows this after lr_find())
        rules = ", ".join(f"{k}={_g(v)}" for k, v in self.suggestions.items())
        return f"LRFindResult(suggestion={_g(self.suggestion)} ({self.rule}); {rules}; {self.outcome})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRFindResult:
        return cls(**data)

    def save_json(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), allow_nan=True))
        return Path(path)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> LRFindResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
