"""The driver: SweepSpec -> Ray Tune Tuner; run and resume. The only module that builds a Tuner.

The searcher resolves each trial's TrialConfig (``search_space``); the trainable runs it in a worker
(``trainable``); the driver shows a live view and closes the MLflow runs of trials that a scheduler stopped or a
crash left behind, and commits Tune's state whole (``tune_state``) so that a kill at any instant resumes.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aesweep.service import loopback, ray_patches, tracking, tune_state
from aesweep.service.liveview import LiveState
from aesweep.service.moasha import MOASHAScheduler
from aesweep.service.samplers import PicklableNSGAIISampler
from aesweep.service.search_space import define_by_run, trial_config
from aesweep.service.sweep_state import (
    DEFAULT_STORAGE,
    STATE_FILE,
    SweepState,
    _is_uri,
    _join,
    _normal_root,
    _read_text,
)
from aesweep.service.trainable import DONE, trainable, trial_run_name
from aesweep.service.trials import best_trial, count_statuses, trial_table
from aesweep.spec.checks import scheduler_metrics
from aesweep.spec.distributions import highest
from aesweep.spec.sweep_spec import SweepSpec

RUNG_TAG = "aesweep.pruned_at_epoch"  # with aesweep.pruned: the epoch (rung) at which the scheduler stopped it

@dataclass
class Outcome:
    """How a sweep ended."""

    state: SweepState
    counts: dict[str, int]
    best: dict[str, Any] | None
    interrupted: bool
    trials: list[dict[str, Any]] = field(default_factory=list)


def init_ray(address: str | None) -> None:
    import logging

    import ray

    # Tune's own loggers (CSV/JSON/TensorBoard per trial) cost time per report; MLflow is the record.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")
    # A checkpoint per epoch with keep-1 forces a state snapshot each time: intended, so not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Results live in MLflow, so Tune's complaint that result.json is missing (its loggers are off) is noise;
    # so are MLflow's INFO lines about creating its tables.
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:  # joining a cluster: the driver advertises the address the cluster reaches it on
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=True)
        return
    # A Ray of our own, on loopback only (aesweep.service.loopback). "local": never join whatever Ray this machine last
    # started (ray.init's default for no address); sharing one is `--address auto`.
    loopback.pin_environment()
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             configure_logging=True, **loopback.init_kwargs())


def _search(spec: SweepSpec, max_points: int | None = None) -> tuple[Any, dict[str, Any], int]:
    """(search_alg or None, param_space additions, num_samples) for the spec's algorithm."""
    from ray import tune

    s = spec.search
    seeds = {"seed_index": tune.grid_search(list(range(s.seeds)))} if s.seeds > 1 else {}
    if s.algorithm == "grid":
        points = list(range(len(spec.grid())))[:max_points]
        return None, {"point": tune.grid_search(points), **seeds}, 1
    if s.algorithm == "random":
        return None, {"sample": tune.grid_search(list(range(s.num_samples))), **seeds}, 1
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    metrics, modes = list(s.metrics), list(s.metrics.values())

    sampler = (PicklableNSGAIISampler(seed=s.seed) if s.algorithm == "nsga2"
               else optuna.samplers.TPESampler(seed=s.seed))
    searcher = OptunaSearch(
        space=functools.partial(define_by_run, spec.model_dump_json(by_alias=True)),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=sampler,
    )
    return searcher, {}, s.num_samples


def _scheduler(spec: SweepSpec) -> Any:
    """The spec's trial scheduler on ``epoch``: ASHA on one metric, MO-ASHA (aesweep.service.moasha) on several, or None.
    max_t defaults to the most epochs a trial of the spec can train."""
    sch = spec.search.scheduler
    if sch.name == "none":
        return None
    max_t = sch.max_t or highest(spec.train.epochs)
    metrics = scheduler_metrics(spec)
    if sch.name == "moasha":

        return MOASHAScheduler(metrics, time_attr="epoch", max_t=max_t, grace_period=sch.grace_period,
                               reduction_factor=sch.reduction_factor)
    from ray.tune.schedulers import ASHAScheduler

    (metric, mode), = metrics.items()
    return ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t,
                         grace_period=sch.grace_period, reduction_factor=sch.reduction_factor)


def _scheduler_state(scheduler: Any) -> dict[str, Any] | None:
    """What a resumed sweep needs of its scheduler (Ray Tune 2.60 checkpoints searchers and callbacks with the
    experiment, never the scheduler): MO-ASHA's own state, or the attributes of Ray's ASHA (what its save()
    pickles)."""
    if scheduler is None:
        return None
    if hasattr(scheduler, "get_state"):
        return {"kind": "get_state", "state": scheduler.get_state()}
    return {"kind": "dict", "state": {k: v for k, v in scheduler.__dict__.items() if k != "on_trial_result"}}


def _set_scheduler_state(scheduler: Any, saved: dict[str, Any] | None) -> None:
    if scheduler is None or not saved:
        return
    if saved["kind"] == "get_state":
        scheduler.set_state(saved["state"])
    else:
        scheduler.__dict__.update(saved["state"])


def _trial_resources(spec: SweepSpec, address: str | None) -> dict[str, float]:
    """The spec's per-trial resources; on a local Ray without GPUs a GPU request becomes CPU-only, with a warning.

    A GPU fraction is what a shipped sweep asks for on a cluster; on a laptop the same file must run rather than
    wait forever for a GPU that will never come. A cluster (``--address`` / RAY_ADDRESS) keeps the request: its
    autoscaler may add GPU nodes."""
    import ray

    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if gpu and local and not ray.cluster_resources().get("GPU"):
        import warnings

        warnings.warn(f"resources.gpu: {gpu} asked, but this machine has no GPU: trials run on the CPU",
                      stacklevel=2)
        gpu = 0.0
    return {"cpu": cpu, "gpu": gpu}


def _storage_root(spec: SweepSpec, storage: str | None) -> str:
    """--storage, else the spec's tracking.storage, else ./aesweep-results: an absolute path or a URI."""
    return _normal_root(storage or spec.tracking.storage or DEFAULT_STORAGE)


def run_sweep(spec: SweepSpec, *, address: str | None = None, storage: str | None = None,
              tracking_uri: str | None = None, progress: Callable[[Any], Any] | None = None,
              max_points: int | None = None) -> Outcome:
    """Run a whole sweep; returns when every trial ended (or on Ctrl-C, with ``interrupted``).

    max_points: run only the first points of a grid (``--smoke``)."""

    init_ray(address)
    uri = tracking.resolve_uri(spec.tracking.uri, tracking_uri)
    root = _storage_root(spec, storage)
    experiment_path = _join(root, spec.name)
    if _read_text(_join(experiment_path, STATE_FILE)) is not None:
        raise FileExistsError(f"{experiment_path}: a sweep named {spec.name} already ran there; "
                              f"`python -m aesweep resume {spec.name}` continues it, --name starts another")
    spec_json = spec.model_dump_json(by_alias=True)
    parent = tracking.start_parent(
        uri, spec.tracking.experiment or spec.name, spec.name, _spec_yaml(spec),
        {"aesweep.spec_file": Path(spec.source or "<spec>").name, "aesweep.spec_hash": spec.hash,
         "aesweep.storage": str(experiment_path)})
    state = SweepState(spec.name, spec_json, spec.source or "", uri, parent, str(experiment_path),
                       spec.resources.cpu, max_points)
    state.save()

    tuner = _new_tuner(spec, state, address, progress)
    return _fit(tuner, state)


def _new_tuner(spec: SweepSpec, state: SweepState, address: str | None, progress: Callable[[Any], Any] | None
               ) -> Any:
    """The Tuner of a sweep's first session (in ``state.experiment_path``, Tune writes ``tuner.pkl`` there)."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig

    root, name = state.experiment_path.rstrip("/").rsplit("/", 1)  # _join(storage root, sweep name)
    search_alg, space, num_samples = _search(spec, state.max_points)
    scheduler = _scheduler(spec)
    param_space = {"aesweep": {"spec": state.spec_json, "uri": state.uri, "parent_run_id": state.parent_run_id,
                               "cpu": spec.resources.cpu}, **space}
    tuner = tune.Tuner(
        tune.with_resources(trainable, _trial_resources(spec, address)),
        param_space=param_space,
        tune_config=TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                               max_concurrent_trials=spec.search.max_concurrent, reuse_actors=True),
        run_config=RunConfig(
            name=name, storage_path=root, verbose=0,
            # On local storage aesweep deletes a trial's older checkpoints itself, once a state that no longer
            # names them is saved whole (tune_state.prune_checkpoints): the checkpoint a resume restores always
            # exists and matches the scheduler's rungs saved with it. On a URI, Tune keeps the newest.
            checkpoint_config=CheckpointConfig(num_to_keep=1 if _is_uri(state.experiment_path) else None),
            failure_config=FailureConfig(max_failures=spec.search.max_failures),
            callbacks=[_Driver(state, progress, scheduler, _expected_trials(spec, state.max_points))],
        ),
    )
    tune_state.snapshot_tuner(state.experiment_path)
    return tuner


def resume_sweep(name_or_path: str, *, storage: str | None = None, address: str | None = None,
                 progress: Callable[[Any], Any] | None = None) -> Outcome:
    """Continue an interrupted sweep: unfinished and errored trials resume from their checkpoints, each
    re-attached to its MLflow child run; runs a crash left RUNNING are closed.

    Tune's files are first put back to the last state it saved whole (``tune_state``). A sweep killed before
    Tune saved any state has run no trial (Tune saves before it starts the first one): it starts afresh, in the
    same parent run. Raises ``tune_state.NoIntactState`` (before Ray is started or anything in MLflow is
    changed) when no intact state is left but trials have runs in MLflow, and ``tune_state.StateOfOtherCode``
    (before anything is touched) when Tune's state names aesweep classes this installation does not have."""
    from ray import tune

    state = SweepState.load(name_or_path, storage)
    path = state.experiment_path
    if missing := tune_state.missing_own_names(path):
        raise tune_state.StateOfOtherCode(
            f"{path}: the sweep was started by another version of aesweep: Tune's saved state refers to "
            f"{missing[0]}{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}, which this one does not "
            f"have; resume it with the aesweep that started it (nothing was changed)")
    for line in [*tune_state.restore_snapshot(path), *tune_state.set_aside_torn_state(path)]:
        print(f"aesweep: {line}", file=sys.stderr)
    spec = state.spec
    fresh = not tune_state.has_experiment_state(path)
    if fresh:
        runs = tracking.children(state.uri, state.parent_run_id)
        if runs:
            raise tune_state.NoIntactState(
                f"{path}: Tune's experiment state has no intact copy, but {len(runs)} trial run(s) of this sweep "
                f"are in MLflow: resuming would run them again; nothing was changed (`python -m aesweep run` with "
                f"--name starts the sweep anew)")
        print(f"aesweep: {path}: the sweep was stopped before Tune saved its first state, when no trial had "
              f"started: it starts from the beginning", file=sys.stderr)
    else:
        for line in tune_state.repair_dangling_checkpoints(path):
            print(f"aesweep: {line}", file=sys.stderr)
    init_ray(address)
    tracking.set_status_running(state.uri, state.parent_run_id)
    if fresh:
        return _fit(_new_tuner(spec, state, address, progress), state)
    tuner = tune.Tuner.restore(
        path,
        trainable=tune.with_resources(trainable, _trial_resources(spec, address)),
        resume_unfinished=True, resume_errored=True,
    )
    # The restored run config keeps its callbacks list from the pickle; attach a fresh driver view. The
    # scheduler comes back from the Tuner's pickle as it was built (empty rungs); the driver's callback state,
    # restored by Tune with the experiment state, puts back its rungs (see _Driver.set_state).
    scheduler = tuner._local_tuner._tune_config.scheduler
    _follow_history(scheduler, _history(state))
    tuner._local_tuner._run_config.callbacks = [_Driver(state, progress, scheduler, _expected_trials(spec,
                                                                                               state.max_points))]
    return _fit(tuner, state)


def _history(state: SweepState) -> dict[str, tuple[int, int | None]]:
    """What MLflow, the record, holds of each trial: trial id -> (its last epoch, the rung it was pruned at or
    None)."""
    out = {}
    for run in tracking.children(state.uri, state.parent_run_id):
        tags = run.data.tags
        rung = tags.get(RUNG_TAG) if tags.get(tracking.PRUNED_TAG) == "true" else None
        out[tags.get(tracking.TRIAL_TAG, "?")] = (int(run.data.metrics.get("epoch", 0)),
                                                   int(rung) if rung is not None else None)
    return out


def _follow_history(scheduler: Any, history: dict[str, tuple[int, int | None]]) -> None:
    """Make a resumed sweep's scheduler decide as the lost session did where MLflow shows what it decided.

    Tune resumes each trial from the checkpoint of the last state saved whole, which may lag what the trials
    went on to do and log before the crash; the trials then train those epochs again (same seeds, same values,
    nothing logged twice) and meet their rungs again, where an asynchronous scheduler may now decide otherwise
    (other trials' arrivals differ). The record stands: a trial MLflow shows past epoch e was continued at every
    rung before e, and one MLflow shows pruned at rung r stops there. Decisions MLflow does not show (at or
    after a trial's last logged epoch) are the scheduler's own; every result still reaches it, so its rungs
    hold each trial's vectors as an uninterrupted sweep's would."""
    if scheduler is None or not history:
        return
    from ray.tune.schedulers import TrialScheduler

    original = scheduler.on_trial_result

    def on_trial_result(controller: Any, trial: Any, result: dict) -> str:
        decision = original(controller, trial, result)
        last, rung = history.get(trial.trial_id, (0, None))
        epoch = result.get("epoch")
        if epoch is None:
            return decision
        if rung is not None and epoch >= rung:
            return TrialScheduler.STOP
        if decision == TrialScheduler.STOP and epoch < last:
            getattr(scheduler, "_stopped", {}).pop(trial.trial_id, None)  # MO-ASHA remembers its stops
            return TrialScheduler.CONTINUE
        return decision

    scheduler.on_trial_result = on_trial_result



def _fit(tuner: Any, state: SweepState) -> Outcome:
    ray_patches.survive_memory_monitor_kills()
    ray_patches.install_atomic_upload()
    interrupted = False
    with _SigintWatch() as sigint:
        try:
            tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C while Tune was saving its state
            interrupted = True
        except BaseException:
            # The driver's own end: no run of this sweep is left RUNNING behind an error (a resume continues it).
            with contextlib.suppress(Exception):
                tracking.close_running_children(state.uri, state.parent_run_id, "KILLED")
                tracking.set_status(state.uri, state.parent_run_id, "KILLED")
            raise
    interrupted = interrupted or sigint.received
    # Whatever is still RUNNING now has no process behind it (stopped by a scheduler, or interrupted).
    tracking.close_running_children(state.uri, state.parent_run_id, "KILLED")
    tracking.set_status(state.uri, state.parent_run_id, "KILLED" if interrupted else "FINISHED")
    trials = trial_table(state)
    counts = count_statuses(trials)
    return Outcome(state, counts, best_trial(state, trials), interrupted, trials)


class _SigintWatch:
    """Tells whether ``Tuner.fit`` ended because of Ctrl-C (SIGINT).

    On the first SIGINT Tune does not raise: it stops the trials, saves the experiment state and returns like a
    finished run (no flag on its ResultGrid). What it does do is put back the SIGINT handler that was installed
    when ``fit`` started (and it leaves its own in place after a normal end). So: install a marker handler before
    ``fit``; if the marker is the handler afterwards, Tune was interrupted. The original handler is restored
    either way, and the marker itself behaves like the original (a second Ctrl-C raises KeyboardInterrupt).
    Only the main thread can own signal handlers; elsewhere (a sweep run from a thread) nothing is watched.
    """

    def __init__(self) -> None:
        self.received = False
        self.original: Any = None
        self.active = False

    def _marker(self, signum: int, frame: Any) -> None:
        handler = self.original
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt

    def __enter__(self) -> _SigintWatch:
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.original = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._marker)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            self.received = signal.getsignal(signal.SIGINT) == self._marker
            signal.signal(signal.SIGINT, self.original if self.original is not None else signal.default_int_handler)


def _spec_yaml(spec: SweepSpec) -> str:
    import yaml

    return yaml.safe_dump(spec.data, sort_keys=False)


def _make_driver_class() -> type:
    from ray.tune import Callback

    class Driver(Callback):
        """Driver-side bookkeeping: closes the child runs of trials a scheduler stopped, and feeds the view."""

        def __init__(self, state: SweepState, progress: Callable[[Any], Any] | None, scheduler: Any = None,
                     expected_trials: int | None = None):

            self.state = state
            self.progress = progress
            self.scheduler = scheduler
            self.view = LiveState(state.spec, expected_trials)
            self.started = time.time()

        def __getstate__(self) -> dict:
            # Tune pickles the run config (callbacks included) into tuner.pkl. The view callback may hold a
            # terminal (rich.live: a lock) and belongs to this process only; resume attaches a fresh driver.
            return {**self.__dict__, "progress": None}

        # Tune checkpoints callback state with the experiment state (each trial checkpoint forces one): the
        # scheduler's rungs ride along, so that a resumed sweep ranks and stops as the interrupted one would have.
        def get_state(self) -> dict | None:
            saved = _scheduler_state(self.scheduler)
            return {"scheduler": saved} if saved else None

        def set_state(self, state: dict) -> None:
            _set_scheduler_state(self.scheduler, state.get("scheduler"))

        def _update(self, trials: list[Any]) -> None:
            if self.progress is not None:
                self.progress(self.view.view(trials, time.time() - self.started))

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._update(trials)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.view.observe(trial, result)
            self._update(trials)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            if not last.get(DONE):  # stopped by the scheduler before run_trial ended: pruned, at this epoch
                self._close(trial.trial_id, "KILLED", None, pruned=True, rung=last.get("epoch"))
            self._update(trials)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._update(trials)  # the last frame: at on_trial_complete, Tune still lists that trial RUNNING

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            reason = _error_text(trial)
            if not self._close(trial.trial_id, "FAILED", reason):
                # Its process died before it opened its run (killed while starting, e.g. by Ray's memory
                # monitor): the run is made here, with the trial's parameters and the reason, so that every
                # trial Tune ran has exactly one run.
                cfg = trial_config(trial.config)
                run = tracking.TrialRun(self.state.uri, self.state.parent_run_id, trial.trial_id,
                                        trial_run_name(cfg, trial.trial_id), tags={})
                run.log_params(cfg.flat())
                run.end("FAILED", reason)
            self._update(trials)

        def _close(self, trial_id: str, status: str, reason: str | None, pruned: bool = False,
                   rung: float | None = None) -> bool:
            """Set the status of the trial's RUNNING run; whether the trial has a run at all."""
            runs = [run for run in tracking.children(self.state.uri, self.state.parent_run_id)
                    if run.data.tags.get(tracking.TRIAL_TAG) == trial_id]
            for run in runs:
                if run.info.status == "RUNNING":
                    if pruned:
                        tracking.set_tag(self.state.uri, run.info.run_id, tracking.PRUNED_TAG, "true")
                        if rung is not None:
                            tracking.set_tag(self.state.uri, run.info.run_id, RUNG_TAG, str(int(rung)))
                    tracking.set_status(self.state.uri, run.info.run_id, status, reason)
            return bool(runs)

    return Driver


def _Driver(state: SweepState, progress: Callable[[Any], Any] | None, scheduler: Any = None,  # noqa: N802
            expected_trials: int | None = None) -> Any:  # a class factory
    return _make_driver_class()(state, progress, scheduler, expected_trials)


def _expected_trials(spec: SweepSpec, max_points: int | None = None) -> int:
    """How many trials the sweep runs in all (the live view's ETA): grid points or samples, times seeds."""
    s = spec.search
    if s.algorithm == "grid":
        return len(spec.grid()[:max_points]) * s.seeds
    return s.num_samples * (s.seeds if s.algorithm == "random" else 1)


def _error_text(trial: Any) -> str:
    """One line for why Tune gave up on a trial: the exception's line of a traceback (the last one), or, for a
    worker killed by Ray's memory monitor (a page of object-store statistics after the reason), the reason."""
    text = getattr(trial, "error_msg", None)
    path = getattr(trial, "error_file", None)
    if not text and path and os.path.exists(path):
        text = Path(path).read_text()
    lines = [line.strip() for line in str(text or "").strip().splitlines() if line.strip()]
    if not lines:
        return "the trial raised an error (see Ray Tune's error.txt in the trial directory)"
    low = [line for line in lines if "running low on memory" in line]
    if low:
        return f"killed by Ray's memory monitor: {low[0][:2000]}"
    return lines[-1][:2000]



