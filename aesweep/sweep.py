"""The sweep service: SweepSpec -> Ray Tune Tuner; run, resume, status. The only module that knows Ray Tune.

Path of a trial: the searcher (Optuna define-by-run for tpe/nsga2; an exhaustive or seeded-random enumeration of
the spec for grid/random) resolves a TrialConfig; a plain function trainable opens the trial's MLflow child run
in its own process, calls ``train.run_trial`` with ``report`` adapted to ``tune.report`` (+ a checkpoint per
epoch), and ends the child run. The driver shows a live view and closes the runs of trials that a scheduler
stopped or a crash left behind.

Layout on disk: ``<storage>/<sweep name>/`` is Ray Tune's experiment directory (trial checkpoints, searcher
state) plus ``aesweep.json`` (spec, tracking URI, parent run id): what ``resume`` and ``status`` read.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aesweep import loopback, tracking, tune_state
from aesweep.spec import (
    Distribution,
    SweepSpec,
    TrialConfig,
    highest,
    parse_spec,
    replay,
    scheduler_metrics,
)

DEFAULT_STORAGE = "aesweep-results"
STATE_FILE = "aesweep.json"
DONE = "aesweep/done"  # in a trial's last report: run_trial completed (finished or failed)
FAILED = "aesweep/failed"
RUNG_TAG = "aesweep.pruned_at_epoch"  # with aesweep.pruned: the epoch (rung) at which the scheduler stopped it

# Metrics a trial reports once, at its end (logged even if a resumed run already holds that epoch).
FINAL_PREFIXES = ("test/", "probe/", "cluster/", "gen/", "latent/", "best/", "time/eval", "time/probe",
                  "time/cluster", "time/train_s", "time/total_s")

SMOKE_OVERRIDES = {
    "dataset.train_size": 300, "dataset.test_size": 100, "train.epochs": 1, "eval.gen_samples": 100,
    "eval.label_efficiency": [], "eval.online_probe_size": 100,
}


def smoke_overrides(spec: SweepSpec) -> list[str]:
    """--smoke: any spec shrunk to 1-2 trials of 1 epoch on a few hundred images (for tests and first tries)."""
    out = []
    for key, value in SMOKE_OVERRIDES.items():
        if key in ("dataset.train_size", "dataset.test_size"):
            current = getattr(spec.dataset, key.split(".")[1])
            value = value if not isinstance(current, int) else min(current, value)
        out.append(f"{key}={json.dumps(value)}")
    if spec.search.scheduler.name != "none":
        out.append("search.scheduler.grace_period=1")  # one epoch: a longer grace period cannot fit
    out.append(f"search.num_samples={min(spec.search.num_samples, 2)}")
    out.append("search.seeds=1")
    warmup = getattr(getattr(spec.train, "schedule", None), "warmup_epochs", 0)
    if not isinstance(warmup, int) or warmup > 0:  # a warm-up must be shorter than the one smoke epoch
        out.append("train.schedule.warmup_epochs=0")
    return out


# --------------------------------------------------------------------------------------------------------------
# From the spec to trial configs


def _optuna_choose(ot_trial: Any) -> Callable[[str, Distribution], Any]:
    """A chooser backed by an Optuna trial: each distribution becomes an Optuna suggestion named by its path."""
    return lambda path, dist: dist.suggest(ot_trial, path)


def _random_choose(rng: random.Random) -> Callable[[str, Distribution], Any]:
    """A chooser for random search: each distribution's own seeded draw (``Distribution.draw``)."""
    return lambda path, dist: dist.draw(rng)


@functools.lru_cache(maxsize=4)
def _spec_from_json(spec_json: str) -> SweepSpec:
    return parse_spec(spec_json)  # JSON is YAML


def define_by_run(spec_json: str, ot_trial: Any) -> dict[str, Any]:
    """OptunaSearch's define-by-run space: resolve the spec with Optuna suggestions. Conditional knobs are
    suggested only for the variant drawn, because ``SweepSpec.resolve`` asks for them only then."""
    trial = _spec_from_json(spec_json).resolve(_optuna_choose(ot_trial))
    return {"trial": trial.model_dump(mode="json")}


def trial_config(config: dict[str, Any]) -> TrialConfig:
    """The TrialConfig a Ray Tune trial config stands for (any search algorithm)."""
    ctx = config["aesweep"]
    if "trial" in config:  # Optuna proposed it (define-by-run constants)
        cfg = TrialConfig.model_validate(config["trial"])
    else:
        spec = _spec_from_json(ctx["spec"])
        if "point" in config:  # grid
            cfg = spec.resolve(replay(spec.grid()[config["point"]]))
        else:  # random: a seeded draw per sample index
            cfg = spec.resolve(_random_choose(random.Random(f"{spec.search.seed}:{config['sample']}")))
    seed_index = int(config.get("seed_index", 0))
    if seed_index:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": cfg.train.seed + seed_index})})
    return cfg


# --------------------------------------------------------------------------------------------------------------
# The trainable (runs in a Ray worker process)

_DATASETS: dict[str, Any] = {}


def _dataset(cfg: TrialConfig) -> Any:
    """The trial's dataset, cached per worker process: with actor reuse, the next trial skips the load."""
    from aesweep import data as datamod

    key = cfg.dataset.model_dump_json()
    if key not in _DATASETS:
        _DATASETS.clear()  # one dataset per worker: a sweep over datasets must not pile them up in memory
        _DATASETS[key] = datamod.load_dataset(cfg.dataset)
    return _DATASETS[key]


def _finite_only(metrics: dict[str, Any]) -> dict[str, float]:
    # A NaN must not reach the scheduler's cutoff or the searcher.
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def _run_name(cfg: TrialConfig, trial_id: str) -> str:
    return f"{cfg.objective.variant}-z{cfg.model.latent_dim}-{trial_id.split('_')[-1]}"


def trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial, its MLflow child run, a checkpoint per epoch."""
    import ray
    import torch
    from ray import tune

    from aesweep.train import failure_reason, load_checkpoint, pick_device, run_trial

    ctx = config["aesweep"]
    cfg = trial_config(config)
    if ctx.get("cpu"):
        torch.set_num_threads(max(1, int(ctx["cpu"])))
    context = tune.get_context()
    trial_id = context.get_trial_id()
    node = ray.get_runtime_context().get_node_id()
    run_name = _run_name(cfg, trial_id)
    checkpoint = tune.get_checkpoint()
    resume_dir = checkpoint.to_directory() if checkpoint is not None else None
    # Where this attempt runs (a retry after a worker or node died gets new values): node, process, and the
    # epoch of the checkpoint it continues from.
    tags = {"aesweep.node": node, "aesweep.device": str(pick_device(cfg.train.device)),
            "aesweep.pid": str(os.getpid())}
    if resume_dir is not None:
        tags["aesweep.resumed_from_epoch"] = str(int(load_checkpoint(resume_dir)["epoch"]))
    run = tracking.TrialRun(ctx["uri"], ctx["parent_run_id"], trial_id, run_name, tags=tags)
    run.log_params(cfg.flat())
    if not run.resumed:
        run.log_text(cfg.to_yaml(), "spec/trial.yaml")

    workdir = Path(context.get_trial_dir()) / "work"

    def report(metrics: dict[str, float], epoch: int, checkpoint_dir: Path | None) -> None:
        final = {k: v for k, v in metrics.items() if k.startswith(FINAL_PREFIXES)}
        run.log_epoch({k: v for k, v in metrics.items() if k not in final}, epoch)
        if final:
            run.log_final(final, epoch)
            for path in result_artifacts(workdir):
                run.log_artifact(path, path.parent.name)
            run.end("FINISHED")
        payload = _finite_only(metrics)
        payload["epoch"] = epoch
        if final:
            payload[DONE] = 1.0
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir
                    else None)

    try:
        result = run_trial(cfg, report, resume_dir, workdir=workdir, dataset=_dataset(cfg))
        reason = result.reason if result.status == "failed" else None
    except Exception as err:
        if type(err).__module__.split(".")[0] == "ray" or isinstance(err, tracking.Superseded):
            raise  # Tune's own control flow (a stop, a lost actor), or a newer attempt owns the run: not a failure
        # An error in the trial's own code or data is deterministic: retrying it would only fail again.
        # FailureConfig(max_failures) stays for what it is for: a process or node that died.
        reason = failure_reason(err)
    if reason is not None:
        run.end("FAILED", reason)
        # A result, not an exception: Ray must not retry a NaN (it would NaN again); no metric, so neither the
        # scheduler's cutoff nor the searcher sees a number from it.
        tune.report({FAILED: 1.0, DONE: 1.0, "aesweep/reason": reason})


def result_artifacts(workdir: Path) -> list[Path]:
    """The files a finished trial logs: figures/*.png and model/state_dict.pt."""
    return sorted((workdir / "figures").glob("*.png")) + [p for p in [workdir / "model" / "state_dict.pt"]
                                                           if p.exists()]


# --------------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class SweepState:
    """What ``resume`` and ``status`` need, stored next to Ray Tune's experiment state."""

    name: str
    spec_json: str
    spec_file: str
    uri: str
    parent_run_id: str
    experiment_path: str
    cpu: float = 1.0
    max_points: int | None = None  # --smoke: the first grid points only (a resume runs the same ones)

    def save(self) -> None:
        _write_text(_join(self.experiment_path, STATE_FILE), json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, name_or_path: str, storage: str | None = None) -> SweepState:
        """By the sweep's directory (a local path or a URI such as ``s3://bucket/aesweep-results/NAME``), or by
        its name under ``storage``."""
        candidates = [name_or_path, _join(_normal_root(storage or DEFAULT_STORAGE), name_or_path)]
        for candidate in candidates:
            text = _read_text(_join(candidate, STATE_FILE))
            if text is not None:
                return cls(**json.loads(text))
        looked = " and ".join(_join(c, STATE_FILE) for c in candidates)
        raise FileNotFoundError(f"{name_or_path}: no sweep there (looked for {looked})")

    @property
    def spec(self) -> SweepSpec:
        return _spec_from_json(self.spec_json)


# Ray Tune's storage may be a local directory or a URI (s3://, gs://, file://): multi-node fault tolerance needs
# storage that every node reaches. aesweep.json lives next to Tune's experiment state, through the same pyarrow
# filesystems that Tune itself uses for URIs.


def _is_uri(path: str) -> bool:
    return "://" in path


def _normal_root(path: str) -> str:
    return path.rstrip("/") if _is_uri(path) else str(Path(path).expanduser().resolve())


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if _is_uri(root) else str(Path(root) / name)


def _write_text(path: str, text: str) -> None:
    if not _is_uri(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        return
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as out:
        out.write(text.encode())


def _read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist (or the URI names no reachable filesystem)."""
    if not _is_uri(path):
        return Path(path).read_text() if Path(path).is_file() else None
    import pyarrow.fs

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        if fs.get_file_info(inner).type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(inner) as stream:
            return stream.read().decode()
    except (OSError, pyarrow.ArrowInvalid):
        return None


@dataclass
class Outcome:
    """How a sweep ended."""

    state: SweepState
    counts: dict[str, int]
    best: dict[str, Any] | None
    interrupted: bool
    trials: list[dict[str, Any]] = field(default_factory=list)


def _init_ray(address: str | None) -> None:
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
    # A Ray of our own, on loopback only (aesweep.loopback). "local": never join whatever Ray this machine last
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
    from aesweep.samplers import PicklableNSGAIISampler

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
    """The spec's trial scheduler on ``epoch``: ASHA on one metric, MO-ASHA (aesweep.moasha) on several, or None.
    max_t defaults to the most epochs a trial of the spec can train."""
    sch = spec.search.scheduler
    if sch.name == "none":
        return None
    max_t = sch.max_t or highest(spec.train.epochs)
    metrics = scheduler_metrics(spec)
    if sch.name == "moasha":
        from aesweep.moasha import MOASHAScheduler

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

    _init_ray(address)
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
    changed) when no intact state is left but trials have runs in MLflow."""
    from ray import tune

    state = SweepState.load(name_or_path, storage)
    path = state.experiment_path
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
    _init_ray(address)
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


def _survive_memory_monitor_kills() -> None:
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
    original = RayActorManager._actor_task_failed
    if getattr(original, "aesweep_memory_kills", False):
        return

    def actor_task_failed(self: Any, tracked_actor_task: Any, exception: Exception) -> None:
        if isinstance(exception, OutOfMemoryError) and not isinstance(exception, RayActorError):
            exception = RayActorError(error_msg=str(exception))  # _error_text makes it one line
        original(self, tracked_actor_task, exception)

    actor_task_failed.aesweep_memory_kills = True  # type: ignore[attr-defined]
    RayActorManager._actor_task_failed = actor_task_failed


def _fit(tuner: Any, state: SweepState) -> Outcome:
    _survive_memory_monitor_kills()
    tune_state.install_atomic_upload()
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
    counts = _count(trials)
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
            from aesweep.liveview import LiveState

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
                                        _run_name(cfg, trial.trial_id), tags={})
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
                        c = tracking.client(self.state.uri)
                        tracking._retry(lambda c=c, r=run: c.set_tag(r.info.run_id, tracking.PRUNED_TAG, "true"))
                        if rung is not None:
                            tracking._retry(lambda c=c, r=run: c.set_tag(r.info.run_id, RUNG_TAG, str(int(rung))))
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


# --------------------------------------------------------------------------------------------------------------
# Views: live progress, status, summary


def _count(trials: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"finished": 0, "running": 0, "pruned": 0, "failed": 0}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return counts


def trial_table(state: SweepState) -> list[dict[str, Any]]:
    """One row per trial from MLflow (works on a running sweep): id, status, the searched params, metrics."""
    spec = state.spec
    primary = next(iter(spec.search.metrics))
    rows = []
    for run in tracking.children(state.uri, state.parent_run_id):
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        rows.append({
            "trial_id": tags.get(tracking.TRIAL_TAG, "?"), "status": tracking.trial_status(run),
            "run_id": run.info.run_id,
            "variant": params.get("objective.variant"), "latent_dim": params.get("model.latent_dim"),
            "epochs": int(metrics.get("epoch", 0)), primary: metrics.get(primary),
            "reason": tags.get(tracking.FAILURE_TAG), "params": params, "metrics": metrics,
        })
    return sorted(rows, key=lambda r: r["trial_id"])


def best_trial(state: SweepState, trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    metric, mode = next(iter(state.spec.search.metrics.items()))
    scored = [t for t in trials if t["metrics"].get(metric) is not None and t["status"] == "finished"]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda t: t["metrics"][metric])


def live_view(state: SweepState, trials: list[Any], elapsed: float) -> dict[str, Any]:
    """The live view of ``trials`` (Ray's Trial objects) without a result history: see aesweep.liveview."""
    from aesweep.liveview import LiveState

    return LiveState(state.spec).view(trials, elapsed)


def describe_config(config: dict[str, Any] | None) -> str:
    """A short label of a trial's config for the live view: variant, latent size and searched knobs."""
    if not config or "aesweep" not in config:
        return "?"
    try:
        cfg = trial_config(config)
    except Exception:  # a view must never break the sweep
        return "?"
    o = cfg.objective
    knobs = ", ".join(f"{k}={getattr(o, k):.3g}" for k in ("beta", "sparsity", "noise_sigma", "temperature")
                      if isinstance(getattr(o, k), float))
    return f"{o.variant}, latent {cfg.model.latent_dim}" + (f", {knobs}" if knobs else "")


# --------------------------------------------------------------------------------------------------------------
# Eval-only sweep: new measurements on stored trials, no retraining


def check_eval_overrides(overrides: list[str]) -> str | None:
    """An eval-only sweep may change only ``eval.*``: the message for the first override that does not."""
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if not key.startswith("eval."):
            return (f"--set {override}: an eval-only sweep changes eval.* fields only (training is not re-run); "
                    f"to change {key}, run a new sweep")
    return None


def _evaluate_run(uri: str, run_id: str, overrides: list[str]) -> dict[str, Any]:
    """In a Ray worker: re-evaluate one finished trial from its MLflow artifacts (``spec/trial.yaml`` and
    ``model/state_dict.pt``) with ``overrides`` applied to its eval section, and log the new final metrics and
    figures into the same child run at the trial's last epoch. Training metrics and params are left as they are;
    tag ``aesweep.reevaluated`` records the overrides. Never raises: a failure is returned and tagged."""
    import tempfile

    import yaml

    from aesweep.spec import _apply_override
    from aesweep.train import evaluate_stored

    c = tracking.client(uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trial_yaml = tracking._retry(lambda: c.download_artifacts(run_id, "spec/trial.yaml", tmp))
            weights = tracking._retry(lambda: c.download_artifacts(run_id, "model/state_dict.pt", tmp))
            stored = Path(tmp) / "stored" / "model"  # evaluate_stored reads <dir>/model/state_dict.pt
            stored.mkdir(parents=True)
            Path(weights).rename(stored / "state_dict.pt")
            data = yaml.safe_load(Path(trial_yaml).read_text())
            for override in overrides:
                _apply_override(data, override)
            cfg = TrialConfig.model_validate(data)
            metrics, figures = evaluate_stored(cfg, stored.parent, Path(tmp) / "figures", dataset=_dataset(cfg))
            history = tracking._retry(lambda: c.get_metric_history(run_id, "epoch"))
            step = max((int(m.value) for m in history), default=0)
            run = tracking.TrialRun.attach(uri, run_id)
            run.log_metrics(metrics, step)
            for path in figures:
                run.log_artifact(path, "figures")
            tracking._retry(lambda: c.set_tag(run_id, "aesweep.reevaluated",
                                              f"{time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(overrides)}".strip()))
        return {"run_id": run_id, "status": "ok", "metrics": metrics}
    except Exception as err:  # one broken trial must not stop the others
        reason = f"{type(err).__name__}: {err}"
        with contextlib.suppress(Exception):
            tracking._retry(lambda: c.set_tag(run_id, "aesweep.eval_failure", reason[:5000]))
        return {"run_id": run_id, "status": "failed", "reason": reason}


def evaluate_sweep(uri: str, parent_run_id: str, spec: SweepSpec, overrides: list[str], *,
                   address: str | None = None, progress: Callable[[dict[str, Any]], Any] | None = None
                   ) -> list[dict[str, Any]]:
    """Re-run evaluation on every finished trial of a sweep as Ray tasks (the spec's resources per task), logging
    into the same child runs. Returns one result per trial (``status`` ok or failed, with ``reason``)."""
    import ray

    runs = [r for r in tracking.children(uri, parent_run_id) if r.info.status == "FINISHED"]
    if not runs:
        return []
    _init_ray(address)
    task = ray.remote(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu, max_retries=0)(_evaluate_run)
    pending = [task.remote(uri, r.info.run_id, list(overrides)) for r in runs]
    results: list[dict[str, Any]] = []
    started = time.time()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        results.append(ray.get(ready[0]))
        if progress is not None:
            progress({"done": len(results), "total": len(runs), "running": len(pending),
                      "failed": sum(r["status"] == "failed" for r in results), "elapsed": time.time() - started})
    return results
