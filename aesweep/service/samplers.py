"""Optuna samplers as Ray Tune's searcher checkpoint needs them (imported only when a sweep searches)."""
from __future__ import annotations

import threading
from typing import Any

import optuna


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II, picklable. Optuna 5's sampler holds a ``threading.Lock``, and Ray Tune pickles the searcher for
    its checkpoint (what ``aesweep resume`` restores): the lock is left out and a fresh one made on restore."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
