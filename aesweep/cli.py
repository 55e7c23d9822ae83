"""Command line: ``python -m aesweep COMMAND``.

Every command validates its spec first: a bad spec prints one line per problem (``FILE:LINE: field: message``)
and exits 2 before anything starts (no Ray, no MLflow, no files written).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from aesweep import __version__, registry
from aesweep.spec import Distribution, SpecError, SweepSpec, load_spec

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
) -> None:
    """aesweep: compare autoencoders with one YAML file and one command."""


def _fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit 2."""
    errors.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _print_problems(err: SpecError) -> None:
    """One line per problem on stderr: ``FILE:LINE: field: message``."""
    for problem in err.problems:
        errors.print(str(problem), markup=False, highlight=False, soft_wrap=True)


def load_or_exit(path: Path, overrides: list[str] | None = None, stages: list[str] | None = None) -> SweepSpec:
    """Load a spec or print its problems and exit 2."""
    try:
        return load_spec(path, overrides or [], stages or [])
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
            spec = load_spec(path, set_ or [], stage or [])
        except SpecError as err:
            bad += 1
            _print_problems(err)
            continue
        checks = [([], spec)]
        if not stage:  # every stage of the file must stay valid, not only the one run last
            for name in spec.stages:
                try:
                    checks.append(([name], load_spec(path, set_ or [], [name])))
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

    from aesweep import data as datamod
    from aesweep import train

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
            line = (f"epoch {epoch}: train/loss {metrics['train/loss']:.4f}  val/loss {metrics['val/loss']:.4f}  "
                    f"val/mse {metrics['val/mse']:.5f}  val/psnr {metrics['val/psnr']:.2f} dB  "
                    f"({metrics['time/epoch_s']:.1f} s)")
            progress.update(task, last=f"val/loss {metrics['val/loss']:.4f}")
            progress.console.print(line, highlight=False)

        try:
            result = train.run_trial(trial, report, resume_from, workdir=out, on_batch=on_batch)
        except datamod.DataError as err:
            _fail(str(err))

    if result.status == "failed":
        errors.print(f"trial failed: {result.reason}", markup=False, highlight=False)
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
    """The live view of a running sweep (aesweep.liveview): a line and a table of the running trials in a
    terminal, one line per change otherwise."""

    def __init__(self) -> None:
        self.last_text = ""
        self.live = None

    def text(self, view: dict) -> str:
        from aesweep.liveview import render_line

        return render_line(view)

    def __call__(self, view: dict) -> None:
        text = self.text(view)
        if text == self.last_text:
            return
        self.last_text = text
        if self.live is not None:
            from aesweep.liveview import render_rich

            self.live.update(render_rich(view))
        else:  # not a terminal: one line per change
            console.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary(outcome) -> None:
    from aesweep import tracking

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
    experiment = tracking.client(state.uri).get_run(state.parent_run_id).info.experiment_id
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
        from aesweep.sweep import smoke_overrides

        spec = load_or_exit(spec_file, overrides + smoke_overrides(spec), stage)
    if not (address or os.environ.get("RAY_ADDRESS")):
        _check_data_or_exit(spec)
    from aesweep import sweep

    try:
        outcome = _run_live(sweep.run_sweep, spec, address=address, storage=storage, tracking_uri=tracking_uri,
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
    from aesweep import sweep

    try:
        outcome = _run_live(sweep.resume_sweep, name_or_path, storage=storage, address=address)
    except FileNotFoundError as err:
        _fail(str(err))
    _finish(outcome)


@app.command()
def status(
    name_or_path: Annotated[str, typer.Argument(help="Sweep name (under --storage) or its directory.")],
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
) -> None:
    """The trials table of a running or finished sweep (read from MLflow; starts no Ray)."""
    from aesweep import sweep

    try:
        state = sweep.SweepState.load(name_or_path, storage)
    except FileNotFoundError as err:
        _fail(str(err))
    trials = sweep.trial_table(state)
    _summary(sweep.Outcome(state, sweep._count(trials), sweep.best_trial(state, trials), False, trials))


@app.command()
def report(
    name_or_path: Annotated[str, typer.Argument(help="Sweep name (under --storage, or in MLflow) or its directory.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default reports/NAME).")] = None,
    storage: Annotated[str | None, typer.Option(help="Ray Tune storage path (default ./aesweep-results).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the sweep's).")] = None,
    log: Annotated[bool, typer.Option(help="Also log the files on the sweep's parent run (report/).")] = True,
) -> None:
    """Tables (CSV, Markdown), plots, Pareto front and parameter importance of a finished or running sweep,
    from MLflow; starts no Ray."""
    from aesweep import report as rep

    try:
        uri, parent, spec = rep.locate(name_or_path, storage, tracking_uri)
        record = rep.load_record(uri, parent, spec)
    except FileNotFoundError as err:
        _fail(str(err))
    except SpecError as err:
        _fail(f"{name_or_path}: the sweep's stored spec does not validate: {err.problems[0]}")
    target = out or Path("reports") / record.name
    command = "python -m aesweep report " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["report"] else None
    made = rep.make_report(record, target, log=log, command=command)
    counts = record.frame["status"].value_counts().to_dict()
    console.print(f"{record.name}: {len(record.frame)} trial(s) ("
                  + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"); {len(made.files)} file(s) in {target}"
                  + (" and on the parent run under report/" if log else ""), highlight=False, soft_wrap=True)
    for metric, row in made.best.items():
        console.print(f"best {metric}: {row[metric]:.5g} (trial {row['trial_id']}, "
                      f"{rep._config_text(row, record)})", highlight=False, soft_wrap=True)
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
    from aesweep import report as rep
    from aesweep import sweep

    overrides = list(set_ or [])
    if problem := sweep.check_eval_overrides(overrides):
        _fail(f"{name_or_path}: {problem}")
    try:
        uri, parent, spec = rep.locate(name_or_path, storage, tracking_uri)
        record = rep.load_record(uri, parent, spec)
    except FileNotFoundError as err:
        _fail(str(err))
    # The overrides must make a valid spec (same messages as `run --set`) before any trial is touched.
    import yaml

    from aesweep.spec import parse_spec

    try:
        parse_spec(yaml.safe_dump(record.spec.data, sort_keys=False), record.spec.source or name_or_path,
                   overrides)
    except SpecError as err:
        _print_problems(err)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    def show(view: dict) -> None:
        console.print(f"evaluated {view['done']}/{view['total']} ({view['running']} running, {view['failed']} "
                      f"failed) | {view['elapsed']:.0f} s", highlight=False)

    results = sweep.evaluate_sweep(uri, parent, record.spec, overrides, address=address, progress=show)
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
    from aesweep import data as datamod

    try:
        datamod.load_dataset(spec.resolve().dataset)
    except datamod.DataError as err:
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
