"""Base classes of the plugin kinds. A plugin subclasses one, sets ``name`` and ``description``, nests a
``Config`` (a :class:`PluginConfig`) and implements one method."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .components import ComponentSet
    from .context import RunContext
    from .interventions import Intervention


class PluginConfig(BaseModel):
    """A plugin's typed settings. Unknown keys are errors; every field has a default (or is required) and a
    description, which ``loctest plugins`` shows. Defaults are validated like given values."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Plugin:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig | dict | None = None):
        self.config = config if isinstance(config, PluginConfig) else self.Config(**(config or {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @classmethod
    def fingerprint(cls, config: PluginConfig, plugins) -> list:
        """What cached results of this plugin with ``config`` depend on beyond its code and config, e.g. the
        digest of a weights file it reads or of a plugin it builds by name (``plugins``: the run's plugin host)."""
        return []


class Locator(Plugin):
    """Finds components. Implement :meth:`locate`. A locator that sets ``scored`` gives every component it
    returns a score (``ComponentSet(components, scores)``), which defines its top k: recipes can sweep k."""

    scored: ClassVar[bool] = False

    def locate(self, context: RunContext) -> ComponentSet:
        raise NotImplementedError


class Editor(Plugin):
    """Turns components into interventions. Implement :meth:`interventions`."""

    @classmethod
    def refusal(cls, config: PluginConfig, kinds: set[str]) -> str | None:
        """Why an editor with ``config`` cannot edit components of these kinds ("mlp", "head", "attn", "resid"),
        or None. ``loctest validate`` asks it about an arm's listed components; located components are known
        only at run time, where the editor raises a UserError with the same reason."""
        return None

    def interventions(self, context: RunContext, components: ComponentSet) -> list[Intervention]:
        raise NotImplementedError


@dataclass
class Scores:
    """What a scorer returns: per metric, one value per repetition; optional per-example details
    (JSON-able lists, used for figures) and a note for the report."""

    values: dict[str, list[float]]
    details: dict[str, list] = field(default_factory=dict)
    note: str = ""


class Scorer(Plugin):
    """Measures behaviour with an arm's interventions in place. Implement :meth:`score`.

    ``metrics`` names what :meth:`score` returns; ``higher_is_better`` says which way is "better" for each.
    """

    metrics: ClassVar[tuple[str, ...]] = ()
    higher_is_better: ClassVar[dict[str, bool]] = {}
    cost_metrics: ClassVar[tuple[str, ...]] = ()  # what an edit costs (e.g. KL): the report plots other metrics against these
    chance: ClassVar[dict[str, float]] = {}  # per metric, what guessing uniformly scores (binary choice: accuracy 0.5)
    # False when repetitions are not independent draws (e.g. bootstrap resamples of the same examples): Welch's
    # test across them is then invalid, and the report says so
    independent_repetitions: ClassVar[bool] = True

    def score(self, context: RunContext, interventions: list[Intervention]) -> Scores:
        raise NotImplementedError

    def compare(self, baseline: Scores, treatment: Scores) -> dict:
        """Extra JSON-able statistics for a recipe comparison of two arms scored by this scorer (optional)."""
        return {}


@dataclass(frozen=True)
class Example:
    """One question with its correct and incorrect answers (best answers first). Multiple-choice datasets
    also keep the options in their original order (``choices``) and the index of the right one (``answer``)."""

    id: str
    question: str
    correct: tuple[str, ...]
    incorrect: tuple[str, ...]
    category: str = ""
    choices: tuple[str, ...] = ()
    answer: int = -1


class Dataset(Plugin):
    """Turns rows of a file into :class:`Example` objects. Implement :meth:`load`. A config field ``path``
    names the file read: cached results follow its content."""

    @classmethod
    def fingerprint(cls, config: PluginConfig, plugins) -> list:
        from .cache import file_digest

        return [file_digest(config.path)] if getattr(config, "path", None) else []

    def load(self) -> list[Example]:
        raise NotImplementedError


@dataclass(frozen=True)
class Verdict:
    """A judge's view of one answer: probabilities that it is truthful and that it is informative."""

    truthful: float
    informative: float


class Judge(Plugin):
    """Judges generated answers for truthfulness and informativeness. Implement :meth:`judge`.

    ``references``, when given, holds each question's dataset :class:`Example` (its reference correct and
    incorrect answers); a judge may use or ignore it."""

    def judge(self, questions: list[str], answers: list[str], references: list[Example] | None = None) -> list[Verdict]:
        raise NotImplementedError
