"""Values computed from a model, kept in memory as long as the model lives."""
from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class ModelMemo:
    """One value per (model, texts), shared by every plugin instance in the process; the model is held by a weak
    reference, so its values go with it."""

    def __init__(self):
        self._values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @staticmethod
    def _key(texts: Sequence[str]) -> str:
        return hashlib.sha256("\0".join(texts).encode()).hexdigest()

    def has(self, model, texts: Sequence[str]) -> bool:
        return self._key(texts) in self._values.get(model, {})

    def get(self, model, texts: Sequence[str], compute: Callable[[], T]) -> T:
        """The value for ``model`` and ``texts``: ``compute()`` the first time."""
        memo, key = self._values.setdefault(model, {}), self._key(texts)
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def per_site(self, model, texts: Sequence[str], sites: Sequence, compute: Callable[[list], dict]) -> dict:
        """``{site: value}`` for ``model`` and ``texts``: ``compute(missing)`` returns the values of the sites not
        computed yet, so each site is computed once however the requests group them."""
        known = self.get(model, texts, dict)
        missing = [site for site in dict.fromkeys(sites) if site not in known]
        if missing:
            known.update(compute(missing))
        return {site: known[site] for site in sites}
