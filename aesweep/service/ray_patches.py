"""The patches aesweep applies to Ray's internals, for the Ray it pins (ray[tune] 2.60; pyproject.toml).

Each one fixes a way Ray Tune 2.60 loses a sweep, says which, and stands down when the class it patches is absent
(another Ray: its own behaviour stands). Each is idempotent: installing twice patches once.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aesweep.service.tune_state import upload_atomically


def patch_once(cls: type, attr: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace ``cls.attr`` by ``make(original)`` unless an earlier call already did."""
    original = getattr(cls, attr)
    if getattr(original, "aesweep_patched", False):
        return
    patched = make(original)
    patched.aesweep_patched = True  # type: ignore[attr-defined]
    setattr(cls, attr, patched)


def install_atomic_upload() -> None:
    """Route Tune's experiment-state uploads to a local filesystem through ``tune_state.upload_atomically``, so
    that a driver killed mid-upload leaves the last state whole (Ray 2.60 copies file by file, in place)."""
    try:
        import pyarrow.fs
        from ray.train._internal.storage import _FilesystemSyncer
    except ImportError:
        return

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def sync_up_command(self: Any, local_path: str, uri: str, exclude: list | None = None) -> tuple:
            fs = self.storage_filesystem
            if isinstance(fs, pyarrow.fs.LocalFileSystem) and os.path.isdir(local_path):
                return upload_atomically, {"local_path": local_path, "fs": fs, "fs_path": uri, "exclude": exclude}
            return original(self, local_path, uri, exclude)
        return sync_up_command

    patch_once(_FilesystemSyncer, "_sync_up_command", make)


def survive_memory_monitor_kills() -> None:
    """Make a trial killed by Ray's memory monitor a failed trial, not the end of the sweep.

    When a node runs low on memory, Ray's memory monitor kills a worker, and the trial's pending call fails with
    ``ray.exceptions.OutOfMemoryError``. Tune's actor manager (Ray 2.60) expects only ``RayActorError`` or
    ``RayTaskError`` there and re-raises anything else as ``RuntimeError("Caught unexpected exception")`` out of
    ``Tuner.fit``: one trial's memory ended every trial of the sweep (seen here: a neighbour process took the
    machine's memory and a 3-trial sweep exited after its first trial). The actor is dead, so it is handed on as
    what it is, a ``RayActorError``: Tune then retries the trial from its checkpoint (``search.max_failures``)
    and records it as failed, with the monitor's message as the reason, when the retries are spent.
    """
    try:
        from ray.air.execution._internal.actor_manager import RayActorManager
        from ray.exceptions import OutOfMemoryError, RayActorError
    except ImportError:  # a Ray without that module: its own handling stands
        return
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def actor_task_failed(self: Any, tracked_actor_task: Any, exception: Exception) -> None:
            if isinstance(exception, OutOfMemoryError) and not isinstance(exception, RayActorError):
                exception = RayActorError(error_msg=str(exception))  # the driver's error text makes it one line
            original(self, tracked_actor_task, exception)
        return actor_task_failed

    patch_once(RayActorManager, "_actor_task_failed", make)
