"""Command line: ``python -m aesweep COMMAND``.

Every command validates its spec first: a bad spec prints one line per problem (``FILE:LINE: field: message``)
and exits 2 before anything starts (no Ray, no MLflow, no files written).

A command imports the layers it needs inside its function: ``validate`` and ``--help`` must not load torch, Ray or
MLflow (seconds and hundreds of MB), so only the spec layer is imported at the top.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from aesweep import __version__, registry
from aesweep.spec.distributions import Distribution
from aesweep.spec.load import load_spec
from aesweep.spec.problems import SpecError
from aesweep.spec.sweep_spec import SweepSpec

app = typer.Typer(
    name="aesweep",
    help="Hyperparameter sweeps for autoencoder research: Ray Tune schedules, Optuna proposes, MLflow records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

EXIT_BAD_INPUT = 2

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a spec field: dotted.key=value (value parsed as YAML). Repeatable."),
]


StageOption = Annotated[
    list[str] | None,
    typer.Option("--stage", help="Apply a stage of the spec (its `stages:` section), e.g. --stage search. "
                 "Repeatable; the sweep is named <name>-<stage>."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"aesweep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")]
    = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an unexpected error "
                                        "(also AESWEEP_DEBUG=1).")] = False,
) -> None:
    """aesweep: compare autoencoders with one YAML file and one command."""
    if debug:
        os.environ["AESWEEP_DEBUG"] = "1"


def _fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit 2."""
    errors.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _print_problems(err: SpecError) -> None:
    """One line per problem on stderr: ``FILE:LINE: field: message``."""
    for problem in err.problems:
        errors.print(str(problem), markup=False, highlight=False, soft_wrap=True)


def checked_spec(path: Path, overrides: list[str] | None = None, stages: list[str] | None = None) -> SweepSpec:
    """Load and validate a spec, including whether its largest model fits the device that would train it.
    Raises SpecError."""
    from aesweep.models import capacity

    spec = load_spec(path, overrides or [], stages or [])
    if found := capacity.problems(spec):
        raise SpecError(found)
    return spec


def load_or_exit(path: Path, overrides: list[str] | None = None, stages: list[str] | None = None) -> SweepSpec:
    """Load a spec or print its problems and exit 2."""
    try:
        return checked_spec(path, overrides, stages)
    except SpecError as err:
        _print_problems(err)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Sweep spec files (YAML).")],
    set_: SetOption = None,
    stage: StageOption = None,
) -> None:
    """Check sweep files without running anything (each file as written, and each of its stages): exit 0 if all
    are valid, 2 otherwise."""
    bad = 0
    for path in files:
        try:
            spec = checked_spec(path, set_ or [], stage or [])
        except SpecError as err:
            bad += 1
            _print_problems(err)
            continue
        checks = [([], spec)]
        if not stage:  # every stage of the file must stay valid, not only the one run last
            for name in spec.stages:
                try:
                    checks.append(([name], checked_spec(path, set_ or [], [name])))
                except SpecError as err:
                    bad += 1
                    _print_problems(err)
        for stages, checked in checks:
            label = f"{path} --stage {' --stage '.join(stages)}" if stages else str(path)
            console.print(
                f"{label}: ok ({checked.name}: {len(checked.parameters())} searched parameter(s), "
                f"algorithm {checked.search.algorithm}, {_trial_count(checked)})",
                markup=False, highlight=False, soft_wrap=True,
            )
    if bad:
        raise typer.Exit(EXIT_BAD_INPUT)


def _trial_count(spec: SweepSpec) -> str:
    if spec.search.algorithm == "grid":
        points = len(spec.grid()) * spec.search.seeds
        return f"{points} trial(s) in the grid"
    return f"{spec.search.num_samples * spec.search.seeds} trial(s)"


@app.command("list")
def list_registered() -> None:
    """The registered datasets, backbones, variants, loss terms, metrics and probes."""
    registry.load_all()
    for title, reg in registry.ALL.items():
        table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
        table.add_column("name", style="cyan", no_wrap=True)
        table.add_column("what it is")
        for name in reg.names():
            table.add_row(name, reg.doc(name))
        if not len(reg):
            table.add_row("(none yet)", "")
        console.print(table)


@app.command("train-one")
def train_one(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec file (YAML).")],
    set_: SetOption = None,
    stage: StageOption = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the checkpoint and the resolved trial.yaml.")]
    = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out if there is one.")] = False,
) -> None:
    """Run one trial of a spec without Ray (distributions take their first/low value unless --set), printing
    each epoch's metrics and the final ones: the way to debug a spec before sweeping it."""
    spec = load_or_exit(spec_file, set_, stage)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from aesweep.data import files as files_mod
    from aesweep.training import train

    searched: dict[str, object] = {}

    def first(path: str, dist: Distribution) -> object:
        searched[path] = dist.first()
        return searched[path]

    trial = spec.resolve(first)
    out = out or Path("aesweep-results") / "train-one" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "trial.yaml").write_text(trial.to_yaml())
    console.print(f"[bold]{spec.name}[/]: variant {trial.objective.variant}, backbone {trial.model.backbone}, "
                  f"latent {trial.model.latent_dim}, {trial.train.epochs} epoch(s) on {train.pick_device(trial.train.device)}")
    if searched:
        console.print("searched fields take: " + ", ".join(f"{k}={v}" for k, v in searched.items()), highlight=False)
    resume_from = out if resume and (out / train.CHECKPOINT_FILE).exists() else None

    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=console,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("train", total=None, epoch=0, last="")

        def on_batch(epoch: int, step: int, steps: int) -> None:
            progress.update(task, completed=step, total=steps, epoch=f"{epoch}/{trial.train.epochs}")

        def report(metrics: dict[str, float], epoch: int, checkpoint: Path | None) -> None:
            # A trial resumed from the checkpoint of its last epoch reports only the final measurements (no
            # train/loss): print what there is.
            shown = [("train/loss", "{:.4f}"), ("val/loss", "{:.4f}"), ("val/mse", "{:.5f}"), ("val/psnr", "{:.2f} dB")]
            line = f"epoch {epoch}: " + "  ".join(f"{k} {fmt.format(metrics[k])}" for k, fmt in shown if k in metrics)
            if "time/epoch_s" in metrics:
                line += f"  ({metrics['time/epoch_s']:.1f} s)"
            if "val/loss" in metrics:
                progress.update(task, last=f"val/loss {metrics['val/loss']:.4f}")
            progress.console.print(line, highlight=False)

        try:
            result = train.run_trial(trial, report, resume_from, workdir=out, on_batch=on_batch)
        except files_mod.DataError as err:
            _fail(str(err))
        except Exception as err:
            if not train.is_out_of_memory(err) or os.environ.get("AESWEEP_DEBUG"):
                raise
            # As in a sweep: a trial that runs out of memory failed, with the reason.
            result = train.TrialResult("failed", 0, {}, [], reason=train.failure_reason(err))

    if result.status == "failed":
        errors.print(f"trial failed: {result.reason}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    table = Table(title=f"{spec.name}: final metrics after {result.epochs} epoch(s)"
                  + (" (early stop)" if result.stopped_early else ""), title_justify="left")
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key in sorted(result.metrics):
        table.add_row(key, f"{result.metrics[key]:.6g}")
    console.print(table)
    console.print(f"checkpoint and trial.yaml in {out}", highlight=False)


class _LiveView:
    """The live view of a running sweep (aesweep.service.liveview): a line and a table of the running trials in a
    terminal, one line per change otherwise."""

    def __init__(self) -> None:
        self.last_text = ""
        self.live = None

    def text(self, view: dict) -> str:
        from aesweep.service.liveview import render_line

        return render_line(view)

    def __call__(self, view: dict) -> None:
        text = self.text(view)
        if text == self.last_text:
            return
        self.last_text = text
        if self.live is not None:
            from aesweep.service.liveview import render_rich

            self.live.update(render_rich(view))
        else:  # not a terminal: one line per change
            console.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary(outcome) -> None:
    from aesweep.service import tracking

    state = outcome.state
    spec = state.spec
    metric = next(iter(spec.search.metrics))
    table = Table(title=f"{state.name}: {len(outcome.trials)} trial(s)", title_justify="left")
    for column in ("trial", "status", "variant", "latent", "epochs", metric, "note"):
        table.add_column(column, justify="right" if column in ("latent", "epochs", metric) else "left")
    for t in outcome.trials:
        value = t["metrics"].get(metric)
        note = (t["reason"] or "")[:60]
        table.add_row(t["trial_id"], t["status"], str(t["variant"]), str(t["latent_dim"]), str(t["epochs"]),
                      f"{value:.5g}" if value is not None else "-", note)
    console.print(table)
    counts = ", ".join(f"{n} {k}" for k, n in outcome.counts.items() if n)
    console.print(f"{state.name}: {counts or 'no trials'}", highlight=False)
    if outcome.best is not None:
        console.print(f"best {metric}: {outcome.best['metrics'][metric]:.5g} (trial {outcome.best['trial_id']}, "
                      f"run {outcome.best['run_id']})", highlight=False)
    experiment = tracking.get_run(state.uri, state.parent_run_id).info.experiment_id
    if state.uri.startswith(("http://", "https://")):
        where = f"{state.uri}/#/experiments/{experiment}/runs"
    else:
        where = (f"mlflow ui --backend-store-uri {state.uri}   then open "
                 f"http://127.0.0.1:5000/#/experiments/{experiment}/runs")
    console.print(f"MLflow: {where}", highlight=False, soft_wrap=True)


def _run_live(fn, *args, **kwargs):
    view = _LiveView()
    if console.is_terminal:
        from rich.live import Live

        with Live(console=console, refresh_per_second=4, transient=False) as live:
            view.live = live
            return fn(*args, progress=view, **kwargs)
    return fn(*args, progress=view, **kwargs)


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec file (YAML).")],
    set_: SetOption = None,
    stage: StageOption = None,
    name: Annotated[str | None, typer.Option(help="Sweep name (default: the spec's name).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else local).")]
    = None,
    num_samples: Annotated[int | None, typer.Option(help="Override search.num_samples.")] = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    smoke: Annotated[bool, typer.Option(help="Shrink the sweep: 1-2 trials, 1 epoch, a few hundred images.")]
    = False,
) -> None:
    """Run a sweep on Ray: Optuna (or a grid) proposes, every trial lands in MLflow."""
    overrides = list(set_ or [])
    if name:
        overrides.append(f"name={name}")
    if num_samples:
        overrides.append(f"search.num_samples={num_samples}")
    spec = load_or_exit(spec_file, overrides, stage)  # validate before anything starts
    if smoke:
        from aesweep.service.search_space import smoke_overrides

        spec = load_or_exit(spec_file, overrides + smoke_overrides(spec), stage)
    if not (address or os.environ.get("RAY_ADDRESS")):
        _check_data_or_exit(spec)
    from aesweep.service import driver

    try:
        outcome = _run_live(driver.run_sweep, spec, address=address, storage=storage, tracking_uri=tracking_uri,
                            max_points=2 if smoke else None)
    except FileExistsError as err:
        _fail(str(err))
    _finish(outcome)


@app.command()
def resume(
    name_or_path: Annotated[str, typer.Argument(help="Sweep name (under --storage) or its directory.")],
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
) -> None:
    """Continue an interrupted sweep where it stopped; each trial keeps its MLflow run."""
    from aesweep.service import driver, tune_state

    try:
        outcome = _run_live(driver.resume_sweep, name_or_path, storage=storage, address=address)
    except (FileNotFoundError, tune_state.NoIntactState, tune_state.StateOfOtherCode) as err:
        _fail(str(err))
    _finish(outcome)


@app.command()
def status(
    name_or_path: Annotated[str, typer.Argument(help="Sweep name (under --storage, or in MLflow) or its directory.")],
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI: find the sweep there by name when its storage is not reachable from here "
             "(a cluster's head: http://HEAD:5000).")] = None,
) -> None:
    """The trials table of a running or finished sweep (read from MLflow; starts no Ray)."""
    from aesweep.service import driver
    from aesweep.service import trials as trials_mod

    try:
        state = _status_state(name_or_path, storage, tracking_uri)
    except FileNotFoundError as err:
        _fail(str(err))
    trials = trials_mod.trial_table(state)
    _summary(driver.Outcome(state, trials_mod.count_statuses(trials), trials_mod.best_trial(state, trials), False, trials))


def _status_state(name_or_path: str, storage: str | None, tracking_uri: str | None):
    """The sweep's state from its storage (aesweep.json), else, with a tracking URI, rebuilt from MLflow: the
    newest parent run tagged with the name, its spec artifact and its storage tag. Raises FileNotFoundError."""
    from aesweep.service import sweep_state

    try:
        return sweep_state.SweepState.load(name_or_path, storage)
    except FileNotFoundError:
        if tracking_uri is None:
            raise
    from aesweep.report import record as record_mod

    uri, parent, spec = record_mod.locate(name_or_path, storage, tracking_uri)
    record = record_mod.load_record(uri, parent, spec)
    return sweep_state.SweepState(record.name, record.spec.model_dump_json(by_alias=True),
                            record.parent_tags.get("aesweep.spec_file", ""), uri, parent,
                            record.parent_tags.get("aesweep.storage", ""))


@app.command()
def submit(
    spec_file: Annotated[Path | None, typer.Argument(metavar="[SPEC]", help="Sweep spec file (YAML), inside the "
                                                      "working directory.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray's job server on the cluster's head: http://HEAD:8265 "
                                                "(default: RAY_ADDRESS).")] = None,
    resume_name: Annotated[str | None, typer.Option("--resume", metavar="NAME",
                                                    help="Submit `resume NAME` instead of a new sweep.")] = None,
    set_: SetOption = None,
    stage: StageOption = None,
    name: Annotated[str | None, typer.Option(help="Sweep name (default: the spec's name).")] = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path on the cluster, shared by its nodes "
                                                "(an NFS directory, s3://...).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI for the sweep (default: the "
                                                     "head's MLFLOW_TRACKING_URI).")] = None,
    smoke: Annotated[bool, typer.Option(help="Shrink the sweep: 1-2 trials, 1 epoch, a few hundred images.")]
    = False,
    working_dir: Annotated[Path | None, typer.Option(
        help="Directory shipped with the job (default: the current one): the spec and, if it holds the aesweep "
             "package, the code the cluster runs.")] = None,
    installed: Annotated[bool, typer.Option(help="Ship nothing: the cluster runs its installed aesweep and reads "
                                            "SPEC from its own disk.")] = False,
    env: Annotated[list[str] | None, typer.Option(
        "--env", metavar="KEY=VALUE", help="An environment variable for the job's driver and every trial "
        "(Ray's runtime_env env_vars), e.g. MLFLOW_HTTP_REQUEST_MAX_RETRIES=2; repeatable.")] = None,
) -> None:
    """Run a sweep (or resume one) on a Ray cluster as a Ray Job: the driver runs on the head, so this machine can
    disconnect. Prints the job id and the commands to follow it."""
    _submit_job(spec_file, address, resume_name, set_ or [], stage or [], name, storage, tracking_uri, smoke,
                working_dir, installed, env or [])


def _submit_job(spec_file: Path | None, address: str | None, resume_name: str | None, overrides: list[str],
                stages: list[str], name: str | None, storage: str | None, tracking_uri: str | None, smoke: bool,
                working_dir: Path | None, installed: bool, env: list[str] | None = None) -> None:
    import shlex
    from urllib.parse import urlparse

    from aesweep.service import jobs

    address = address or os.environ.get("RAY_ADDRESS")
    if not address or not address.startswith(("http://", "https://")):
        _fail(f"--address: {address or '(none)'}: the job server's URL is needed, http://HEAD:8265 (Ray's "
              f"dashboard port on the cluster's head)")
    if (spec_file is None) == (resume_name is None):
        _fail("submit: give either SPEC (a new sweep) or --resume NAME (continue one), not both or neither")
    root = (working_dir or Path.cwd()).resolve()
    args = ["python", "-m", "aesweep"]
    if resume_name is not None:
        sweep_name = resume_name
        args += ["resume", resume_name]
    else:
        extra = list(overrides) + ([f"name={name}"] if name else [])
        spec = load_or_exit(spec_file, extra, stages)  # a bad spec stops here, before the cluster is contacted
        sweep_name = spec.name
        where = spec_file.resolve()
        if not installed:
            if not where.is_relative_to(root):
                _fail(f"{spec_file}: not inside the working directory {root} that the job ships; run from a "
                      f"directory that holds it, or --working-dir")
            where = where.relative_to(root)
        args += ["run", str(where)] + [a for o in overrides for a in ("--set", o)]
        args += [a for st in stages for a in ("--stage", st)] + (["--name", name] if name else [])
        args += ["--tracking-uri", tracking_uri] if tracking_uri else []
        args += ["--smoke"] if smoke else []
    args += ["--storage", storage] if storage else []
    env_vars = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--env {item}: KEY=VALUE expected")
        env_vars[key.strip()] = value
    try:
        job, entrypoint = jobs.submit(address, args, sweep_name, None if installed else root, env_vars)
    except jobs.SubmitFailed as err:
        errors.print(f"submit: {err}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    mlflow = tracking_uri or f"http://{urlparse(address).hostname}:5000"
    storage_arg = f" --storage {shlex.quote(storage)}" if storage else ""
    for line in (
        f"job {job} submitted to {address}: {entrypoint}",
        f"  follow it:     ray job logs {job} --address {address} --follow",
        f"  job status:    ray job status {job} --address {address}",
        f"  stop it:       ray job stop {job} --address {address}",
        f"  trials:        python -m aesweep status {sweep_name} --tracking-uri {mlflow}",
        f"  after a crash: python -m aesweep submit --resume {sweep_name} --address {address}{storage_arg}",
    ):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _findings_or_exit(path: Path) -> Any:
    """A findings file's claims, or its problems printed (one line each) and exit 2."""
    from aesweep.spec.findings import load_findings

    try:
        return load_findings(path)
    except SpecError as err:
        _print_problems(err)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@app.command()
def report(
    name_or_path: Annotated[str, typer.Argument(help="Sweep name (under --storage, or in MLflow) or its directory.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default reports/NAME).")] = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the sweep's).")] = None,
    log: Annotated[bool, typer.Option(help="Also log the files on the sweep's parent run (report/).")] = True,
    findings: Annotated[Path | None, typer.Option(
        help="The study's claims to evaluate (default: sweeps/findings/NAME.yaml for the sweep file NAME.yaml, if any).")]
    = None,
    with_sweep: Annotated[list[str] | None, typer.Option(
        help="Another sweep whose trials the findings also read (a study's arm run as its own stage); repeatable.")]
    = None,
) -> None:
    """Tables (CSV, Markdown), plots, Pareto front, parameter importance and the study's findings (computed
    verdicts) of a finished or running sweep, from MLflow; starts no Ray."""
    from aesweep.report import assemble
    from aesweep.report import record as record_mod
    from aesweep.spec.findings import findings_beside

    if findings is not None:  # a bad claims file is refused before anything is read or written
        claims = _findings_or_exit(findings)
    records = []
    for name in [name_or_path, *(with_sweep or [])]:
        try:
            uri, parent, spec = record_mod.locate(name, storage, tracking_uri)
            records.append(record_mod.load_record(uri, parent, spec))
        except FileNotFoundError as err:
            _fail(str(err))
        except SpecError as err:
            _fail(f"{name}: the sweep's stored spec does not validate: {err.problems[0]}")
    record, also = records[0], records[1:]
    if findings is None:
        spec_file = record.parent_tags.get("aesweep.spec_file", "")
        beside = findings_beside(Path("sweeps") / spec_file) if spec_file else None
        if beside is not None and beside.is_file():
            findings, claims = beside, _findings_or_exit(beside)
    target = out or Path("reports") / record.name
    command = "python -m aesweep report " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["report"] else None
    made = assemble.make_report(record, target, log=log, command=command,
                                findings=claims if findings is not None else None,
                                findings_source=str(findings or ""), also=also)
    counts = record.frame["status"].value_counts().to_dict()
    console.print(f"{record.name}: {len(record.frame)} trial(s) ("
                  + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"); {len(made.files)} file(s) in {target}"
                  + (" and on the parent run under report/" if log else ""), highlight=False, soft_wrap=True)
    for metric, row in made.best.items():
        console.print(f"best {metric}: {row[metric]:.5g} (trial {row['trial_id']}, chosen on {row['chosen_on']}, "
                      f"{assemble.config_text(row, record)})" + (f"; on test {row['reported']}: {row[row['reported']]:.5g}"
                      if row["reported"] != metric else ""), highlight=False, soft_wrap=True)
    console.print(f"read first: {target / 'summary.md'}", highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    name_or_path: Annotated[str, typer.Argument(help="Sweep name (under --storage, or in MLflow) or its directory.")],
    set_: SetOption = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the sweep's).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else local).")]
    = None,
) -> None:
    """Eval-only sweep: re-run evaluation (e.g. `--set 'eval.probes=[random_forest]'`) on every finished trial's
    stored weights, without retraining; new metrics and figures go into the same MLflow child runs."""
    from aesweep.report import record as record_mod
    from aesweep.service import reevaluate

    overrides = list(set_ or [])
    if problem := reevaluate.check_eval_overrides(overrides):
        _fail(f"{name_or_path}: {problem}")
    try:
        uri, parent, spec = record_mod.locate(name_or_path, storage, tracking_uri)
        record = record_mod.load_record(uri, parent, spec)
    except FileNotFoundError as err:
        _fail(str(err))
    # The overrides must make a valid spec (same messages as `run --set`) before any trial is touched.
    import yaml

    from aesweep.spec.load import parse_spec

    try:
        parse_spec(yaml.safe_dump(record.spec.data, sort_keys=False), record.spec.source or name_or_path,
                   overrides)
    except SpecError as err:
        _print_problems(err)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    def show(view: dict) -> None:
        console.print(f"evaluated {view['done']}/{view['total']} ({view['running']} running, {view['failed']} "
                      f"failed) | {view['elapsed']:.0f} s", highlight=False)

    results = reevaluate.evaluate_sweep(uri, parent, record.spec, overrides, address=address, progress=show)
    if not results:
        console.print(f"{record.name}: no finished trial to evaluate", highlight=False)
        return
    failed = [r for r in results if r["status"] == "failed"]
    new = sorted({k for r in results if r["status"] == "ok" for k in r["metrics"]} - set(record.metric_columns))
    console.print(f"{record.name}: re-evaluated {len(results) - len(failed)} of {len(results)} trial(s) into their "
                  f"MLflow runs" + (f"; new metrics: {', '.join(new[:12])}{' ...' if len(new) > 12 else ''}"
                                    if new else ""), highlight=False, soft_wrap=True)
    for r in failed:
        console.print(f"failed: run {r['run_id']}: {r['reason']}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _check_data_or_exit(spec: SweepSpec) -> None:
    """Locally, a missing or corrupt dataset is one line and exit 2 before Ray starts (on a cluster the
    workers, not this machine, hold the data)."""
    from aesweep.data import datasets
    from aesweep.data import files as files_mod

    try:
        datasets.load_dataset(spec.resolve().dataset)
    except files_mod.DataError as err:
        _fail(f"{spec.source}: dataset: {err}")


def _finish(outcome) -> None:
    _summary(outcome)
    if outcome.interrupted:
        errors.print(f"interrupted: trials are checkpointed and their MLflow runs marked KILLED; continue with\n"
                     f"  python -m aesweep resume {outcome.state.experiment_path}", markup=False, highlight=False)
        raise typer.Exit(130)
    if outcome.counts.get("failed"):
        console.print(f"{outcome.counts['failed']} trial(s) failed (reasons above); the others completed.",
                      highlight=False)


# Errors a user causes (their input, their data, their machine's limits): one line and exit 2, like a bad spec.
_USER_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError, UnicodeError, ValueError)


def main() -> None:
    """The console entry point: every error reaches the user as one line, never a traceback (unless --debug or
    AESWEEP_DEBUG=1 asks for one). Usage errors stay click's (its message, exit 2)."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
    except Exception as err:
        if os.environ.get("AESWEEP_DEBUG"):
            raise
        if isinstance(err, SpecError):
            _print_problems(err)
            sys.exit(EXIT_BAD_INPUT)
        from aesweep.data import files as files_mod
        from aesweep.training.train import failure_reason, is_out_of_memory

        user = isinstance(err, (files_mod.DataError, *_USER_ERRORS)) or is_out_of_memory(err)
        hint = "" if user else " (unexpected: run again with --debug for the traceback, and please report it)"
        errors.print(f"aesweep: {failure_reason(err)}{hint}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT if user else 1)
