"""`llmops`: the kit's command line. Every Makefile target calls one of these commands.

    llmops train                         # the whole pipeline on the embedded default
    llmops train -c configs/codellama-7b.yaml --set training.max_steps=80
    llmops check-base | eval | merge | report | config | data
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from typer.core import TyperGroup

from common import layout
from common.errors import KitError
from trainer.config import load_config

LATEST_RUN, LATEST_MODEL = layout.latest_run(), str(layout.latest_model())


class _KitGroup(TyperGroup):
    """Every command's user errors end here: one red line naming the problem, exit 2, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KitError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="llmops", help="LoRA fine-tuning for text-to-SQL: check the base, train, evaluate, merge, report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=_KitGroup,
)

@app.callback()
def _options(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show third-party progress bars and warnings")] = False) -> None:
    """LoRA fine-tuning for text-to-SQL: check the base, train, evaluate, merge, report; and run it all on Google Cloud."""
    from common.quiet import quiet

    quiet(keep=verbose or None)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="run config YAML (default: built-in defaults)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a key: section.key=value (repeatable)")]


def _log(msg: str) -> None:
    print(msg, flush=True)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _config(config: Path | None, overrides: list[str] | None):
    return load_config(config, overrides or [])


def _number(low: float | None = None, high: float | None = None, above: float | None = None):
    """A typer callback: the option is a finite number in range (click's own ranges let NaN through: nan < 0 is False)."""
    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high) \
                or (above is not None and value <= above):
            bounds = " and ".join(b for b in (f">= {low:g}" if low is not None else "", f"> {above:g}" if above is not None else "",
                                              f"<= {high:g}" if high is not None else "") if b)
            raise typer.BadParameter(f"{value} is not a finite number {bounds}".rstrip())
        return value
    return check


def _run_id(value: str | None) -> str | None:
    try:
        return None if value is None else layout.check_run_id(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


@app.command()
def train(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    force: Annotated[bool, typer.Option(help="tune even if the base model already meets the target")] = False,
) -> None:
    """Run the whole pipeline: base-model check, LoRA training, evaluation, merge, report."""
    from trainer.pipeline import run_pipeline
    from trainer.plan import Placement, plan_run

    plan = plan_run(_config(config, overrides), Placement.from_env(), force=force)  # the edge: config and environment, once
    try:
        report = run_pipeline(plan, log=_log)
    except KeyboardInterrupt:
        _fail("interrupted; checkpoints are kept, so the same command resumes", 130)
    _summary(report)


def _summary(report: dict) -> None:
    base = report.get("base_eval", {}).get("execution_accuracy")
    tuned = report.get("tuned_eval", {}).get("execution_accuracy")
    parts = [f"status {report['status']}"]
    if base is not None:
        parts.append(f"base {base:.1%}")
    if tuned is not None:
        parts.append(f"tuned {tuned:.1%}")
    parts.append(f"wall {report['wall_seconds']:.0f}s")
    lab_machine, projected = next(iter(report["cost"]["projected"].items()))
    parts.append(f"cost ${report['cost']['usd']:.4f} (on {lab_machine}: ${projected['on_demand_usd']:.4f}, Spot ${projected['spot_usd']:.4f})")
    typer.secho("summary: " + ", ".join(parts), bold=True)


@app.command("check-base")
def check_base(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    candidates: Annotated[str | None, typer.Option(help="compare these models (comma-separated, anything model.base accepts) on "
                                                        "the same held-out rows: accuracy, latency, serving cost; pick one")] = None,
) -> None:
    """Evaluate the base model on the held-out rows and say whether tuning is needed (exit 0 either way)."""
    from trainer.pipeline import check_base as _check
    from trainer.pipeline import load_inputs
    from trainer.plan import Placement, plan_for

    cfg = _config(config, overrides)
    if candidates is not None:
        from trainer import candidates as c

        comparison, folder = c.run(cfg, candidates, _log)
        typer.echo(c.render_markdown(comparison))
        typer.echo(f"written to {folder / c.JSON_FILE} and {folder / c.MD_FILE}")
        return
    plan = plan_for(cfg, Placement.from_env())
    result, good = _check(plan, load_inputs(plan, _log), _log)
    verdict = "meets" if good else "is below"
    typer.echo(f"base model {verdict} the {cfg.eval.target_accuracy:.0%} target ({result.execution_accuracy:.1%})"
               + ("" if good else ": fine-tuning is worth it"))


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="model dir to evaluate (default: the latest run's merged model)")] = LATEST_MODEL,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Evaluate a saved model on the held-out rows: execution accuracy and exact match."""
    from trainer.pipeline import evaluate_model_dir

    result = evaluate_model_dir(model, _config(config, overrides), _log)
    typer.echo(yaml.safe_dump({k: v for k, v in result.to_dict().items() if k != "samples"}, sort_keys=False))


@app.command()
def merge(
    run: Annotated[Path, typer.Option("--run", "-r", help="run dir holding adapter/")] = LATEST_RUN,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Merge a run's adapter into the base again (full precision, verified) into <run>/merged."""
    from trainer.pipeline import merge_run

    info = merge_run(run, _config(config, overrides), _log)
    typer.echo(f"merged into {run / 'merged'} (greedy outputs match: {info['greedy_match']})")


@app.command()
def report(run: Annotated[Path, typer.Option("--run", "-r", help="run dir")] = LATEST_RUN) -> None:
    """Rewrite report.md and report.png from a run's report.json and print the summary."""
    from trainer.report import read_report, rewrite_report

    if not (run / "report.json").is_file():
        _fail(f"{run} has no report.json (run `make train` first)")
    data = read_report(run)
    rewrite_report(run, data)
    typer.echo((run / "report.md").read_text(encoding="utf-8"))


StackOpt = Annotated[Path, typer.Option("--stack-file", help="`pulumi stack output --json` saved to a file")]
DEFAULT_STACK = Path(".cache/stack.json")


def _stack(path: Path):
    from control.stack import load_stack

    return load_stack(path)


@app.command()
def launch(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    machine: Annotated[str | None, typer.Option(help="machine type from common/catalog.yaml (default: training.machine_type)")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="machines; more than one uses Vertex's multi-worker pools")] = 1,
    spot: Annotated[bool, typer.Option(help="Spot VMs: cheaper, can be reclaimed; the trainer resumes from its checkpoint")] = False,
    image: Annotated[str | None, typer.Option(help="image URI (default: the kit image for this source, built if missing)")] = None,
    expected_hours: Annotated[float | None, typer.Option(callback=_number(above=0),
                                                         help="for the cost estimate (default: last comparable run)")] = None,
    max_cost: Annotated[float, typer.Option(callback=_number(low=0), help="refuse runs estimated above this many USD")] = 25.0,
    max_queued_minutes: Annotated[float, typer.Option(callback=_number(low=1),
                                                      help="cancel a job still waiting for machines after this long")] = 60.0,
    yes: Annotated[bool, typer.Option("--yes", help="launch even above --max-cost")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the CreateCustomJob request body and stop")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="submit and return without following the job")] = False,
    poll_seconds: Annotated[float, typer.Option(callback=_number(low=0), help="how often to check the job's state while following it")] = 30.0,
    stack_file: StackOpt = DEFAULT_STACK,
    run_id: Annotated[str | None, typer.Option(callback=_run_id, help="default: a timestamp")] = None,
) -> None:
    """Run the same trainer as a Vertex AI CustomJob (`make train BACKEND=vertex`), follow it, fetch its report."""
    from control.job import LaunchOptions, trainer_args
    from control.launch import launch as _launch

    cfg = _config(config, overrides)  # validated here, before paying for a machine
    opts = LaunchOptions(run_id=run_id or layout.new_run_id(), trainer_args=trainer_args(cfg), replicas=replicas, spot=spot, image=image,
                         expected_hours=expected_hours, max_cost_usd=max_cost, yes=yes, max_queued_minutes=max_queued_minutes)
    if machine:
        opts.machine_type = machine
    result = _launch(opts, _stack(stack_file), dry_run=dry_run, follow=not detach, poll_s=poll_seconds, log=_log)
    if result.get("state") and result["state"] != "JOB_STATE_SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def image(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the CreateBuild request and stop")] = False,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Build the kit image with Cloud Build and push it to the stack's registry, unless its tag is there (`make image`)."""
    import json

    from control.image import build_request, ensure_image, kit_image

    stack = _stack(stack_file)
    if dry_run:
        img = kit_image()
        _log(f"kit image {img.uri(stack.registry_url or 'REGISTRY')} ({len(img.files)} files in the build context)")
        print(json.dumps(build_request(img, stack), indent=2, sort_keys=True))
        return
    typer.echo(ensure_image(stack, _log))


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="projects/.../customJobs/ID, as `make train BACKEND=vertex` printed it")],
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Cancel a running CustomJob."""
    from control.launch import cancel as _cancel

    _cancel(job, _stack(stack_file))
    typer.echo(f"cancel requested for {job}")


@app.command()
def deploy(
    run: Annotated[Path, typer.Option("--run", "-r", help="run dir with report.json (and merged/ for a local run)")] = LATEST_RUN,
    image: Annotated[str | None, typer.Option(help="image URI (default: the kit image for this source, built if missing; "
                                                   "with --engine vllm, Model Garden's vLLM image)")] = None,
    engine: Annotated[str, typer.Option(help="kit: the kit image's server; vllm: Vertex Model Garden's vLLM container")] = "kit",
    min_replicas: Annotated[int, typer.Option(min=1)] = 1,
    max_replicas: Annotated[int, typer.Option(min=1)] = 2,
    gate: Annotated[float, typer.Option(callback=_number(low=0, high=1), help="refuse models under this execution accuracy")] = 0.7,
    force: Annotated[bool, typer.Option(help="deploy even if worse than the deployed model")] = False,
    idle_minutes: Annotated[int | None, typer.Option(min=5, max=480, help="scale to zero after this many minutes without requests "
                                                                          "(nothing billed while idle; then a cold start)")] = None,
    spot: Annotated[bool, typer.Option(help="serve on Spot VMs: cheaper, can be reclaimed")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the upload and deploy requests and stop")] = False,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Upload the run's merged model as a new version and deploy it to the kit's Vertex endpoint (`make deploy`)."""
    from control.deploy import DeployOptions
    from control.deploy import deploy as _deploy

    if engine not in ("kit", "vllm"):
        _fail(f"--engine must be kit or vllm, got {engine!r}")
    opts = DeployOptions(run_dir=run, image=image, engine=engine, min_replicas=min_replicas, max_replicas=max_replicas,
                         accuracy_gate=gate, force=force, idle_minutes=idle_minutes, spot=spot)
    _deploy(opts, _stack(stack_file), dry_run=dry_run, log=_log)


@app.command()
def predict(
    use_endpoint: Annotated[bool, typer.Option("--endpoint", help="ask the stack's Vertex endpoint instead of the local server")] = False,
    url: Annotated[str, typer.Option(help="the local server's predict route")] = "http://127.0.0.1:8080/predict",
    question: Annotated[str | None, typer.Option(help="default: a held-out question from the bundled sample, then the lab's "
                                                      "(the endpoint: the lab's)")] = None,
    context: Annotated[str | None, typer.Option(help="CREATE TABLE statements the question is about")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=512)] = 100,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Ask the served model a question and print the SQL (`make predict [ENDPOINT=1]`)."""
    from control import predict as p

    if (question is None) != (context is None):
        _fail("give both --question and --context, or neither for the lab's example")
    asked = {"question": question, "context": context} if question is not None else None
    if use_endpoint:
        engine, sql = p.endpoint(_stack(stack_file), asked or p.LAB_QUESTION, max_tokens)
        _log(f"answered by the {engine} engine")
    else:
        sql = p.local(url, asked, max_tokens)
    typer.echo(sql)


@app.command()
def doctor(
    project: Annotated[str | None, typer.Option(help="the project to check (default: the stack's, else $GOOGLE_CLOUD_PROJECT)")] = None,
    region: Annotated[str | None, typer.Option(help="default: the stack's, else common/catalog.yaml's")] = None,
    stack_file: StackOpt = DEFAULT_STACK,
    spot: Annotated[bool, typer.Option("--spot", help="Spot training is planned (SPOT=1): its quota blocks too")] = False,
) -> None:
    """Check, read-only, that a project is ready for `pulumi up` and a launch (`make doctor`); exit 1 if something blocks."""
    from common import catalog
    from control import doctor as d

    stack = _stack(stack_file) if stack_file.is_file() else None  # doctor also runs before the first `pulumi up`
    project = project or (stack.project if stack else None) or d.default_project()
    if not project:
        _fail("which project? `llmops doctor --project my-project` (or set GOOGLE_CLOUD_PROJECT)")
    region = region or (stack.region if stack else catalog.catalog()["region"])
    _log(f"checking {project} in {region}" + (f" (stack {stack.stack})" if stack else " (no stack outputs yet)"))
    results = d.run(d.Target(project, region, stack, spot=spot), log=typer.echo)
    blocking = [c for c in results if c.status == d.FAIL]
    _log(f"{len(blocking)} blocking, {sum(c.status == d.WARN for c in results)} to look at" if blocking or any(c.status == d.WARN for c in results)
         else "ready")
    if blocking:
        raise typer.Exit(1)


@app.command("notebook-run")
def notebook_run(
    overrides: SetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the CreateNotebookExecutionJob request body and stop")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="submit and return without following the execution")] = False,
    poll_seconds: Annotated[float, typer.Option(callback=_number(low=0))] = 30.0,
    timeout_hours: Annotated[float, typer.Option(callback=_number(low=0.1, high=24))] = 4.0,
    run_id: Annotated[str | None, typer.Option(callback=_run_id, help="default: nb-<timestamp>")] = None,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Run notebooks/lab01.ipynb headless on the kit's Colab runtime template; download the executed notebook (`make notebook-run`)."""
    import json

    from control import notebook as nb

    stack = _stack(stack_file)
    run = nb.NotebookRun(run_id=run_id or layout.new_run_id("nb-"), overrides=list(overrides or []), timeout_hours=timeout_hours)
    submitted = nb.submit(stack, run, _log, dry_run=dry_run)
    if dry_run:
        print(json.dumps(submitted["body"], indent=2, sort_keys=True))
        return
    if detach:
        typer.echo(submitted["name"])
        return
    state, local = nb.follow(submitted["name"], stack, submitted["paths"]["output"], Path("runs") / "notebooks" / run.run_id,
                             poll_s=poll_seconds, log=_log)
    _log(f"executed notebook: {local}" if local else "no executed notebook was written")
    if state != "JOB_STATE_SUCCEEDED":
        raise typer.Exit(1)


@app.command("budget-guard")
def budget_guard(
    dry_run: Annotated[bool, typer.Option(help="log what it would do and do nothing (--no-dry-run acts for real)")] = True,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8080,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Run the budget guard locally under functions-framework, configured as infra configures it (`make budget-guard`)."""
    import os
    import shutil

    from common import layout

    stack = _stack(stack_file)
    guard_dir = Path(__file__).resolve().parents[1] / "infra" / "budget_guard"
    # The guard names its own variables (infra/budget_guard/settings.py; infra builds its environment with it too).
    from common.modules import load_file

    guard_settings = load_file(guard_dir / "settings.py", "budget_guard_settings")
    try:
        guard_env = guard_settings.environment(
            project=stack.project, region=stack.region, dry_run=dry_run, label_selector=stack.labels,
            **guard_settings.thresholds(stack.budget_thresholds), runtime_template=stack.runtime_template_id, budget_currency=stack.budget_currency,
            budget_name=stack.budget_name, billing_account=stack.billing_account,
            state_path=str(layout.scratch("budget-guard", "state.json").resolve()))
    except guard_settings.SettingsError as e:
        from control.stack import from_infra

        _fail(f"{e}: export the stack outputs again (`cd infra && pulumi up && pulumi stack output --json > {from_infra(stack_file)}`)")
    env = {**os.environ, **guard_env, "PYTHONPATH": str(guard_dir)}
    # Beside this interpreter first: `make budget-guard` runs .venv/bin/llmops without the venv on PATH.
    exe = shutil.which("functions-framework", path=str(Path(sys.executable).parent)) or shutil.which("functions-framework") \
        or _fail("functions-framework is not installed: run `make setup`")
    _log(f"budget guard for {stack.project}/{stack.region}, labels {stack.labels}, "
         f"{'dry run' if dry_run else 'ACTING FOR REAL'}, on http://127.0.0.1:{port}/ (send one with `make budget-alert`)")
    os.chdir(guard_dir)
    os.execve(exe, [exe, "--target", "on_budget_alert", "--signature-type", "cloudevent", "--host", "127.0.0.1",
                    "--port", str(port)], env)


@app.command()
def prices(
    refresh: Annotated[bool, typer.Option("--refresh", help="read today's list prices from the Cloud Billing Catalog API and write "
                                                           "a new price file (default: the one in use)")] = False,
    region: Annotated[str | None, typer.Option(help="default: the stack's, else common/catalog.yaml's")] = None,
    out: Annotated[Path | None, typer.Option(help="where --refresh writes (default: $LLMOPS_PRICES, else common/prices.yaml)")] = None,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Show what each machine costs per hour on each surface, or refresh the prices from Google (`make prices [REFRESH=1]`)."""
    from common import catalog
    from control import prices as p

    region = region or (_stack(stack_file).region if stack_file.is_file() else catalog.catalog()["region"])
    p.run(region, refresh, out, log=_log)


@app.command("config")
def show_config(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Print the resolved run config (defaults + file + overrides) as YAML."""
    cfg = _config(config, overrides)
    typer.echo(yaml.safe_dump(cfg.model_dump(), sort_keys=False))


@app.command()
def data(out: Annotated[Path, typer.Argument(help="where to write the JSONL")] = Path("data/sql_sample.jsonl")) -> None:
    """Regenerate the bundled text-to-SQL sample (deterministic)."""
    from trainer.embedded import sqlgen

    sqlgen.main([str(out)])


@app.command()
def replicas(stack_file: StackOpt = DEFAULT_STACK) -> None:
    """What the stack's endpoints are running: each deployed model's replicas, its $/h and its cost since deploy."""
    from control import replicas as r

    for line in r.lines(r.running(_stack(stack_file))):
        typer.echo(line)


RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="where the local runs are")]


@app.command()
def runs(
    status: Annotated[list[str] | None, typer.Option("--status", help="only runs in this status (repeatable or a,b): succeeded, "
                                                     "failed, interrupted, running, skipped, ...")] = None,
    model: Annotated[str | None, typer.Option("--model", help="only runs whose base model contains this (any case)")] = None,
    since: Annotated[str | None, typer.Option("--since", help="only runs started on or after this date (YYYY-MM-DD, UTC)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
    runs_dir: RunsDirOpt = Path(layout.RUNS),
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Every run in one table: local, and with a stack file the ones on Vertex and which is deployed (`make runs`)."""
    from control import runs as r

    r.show(runs_dir, _stack(stack_file) if stack_file.is_file() else None, status or [], model, since, as_json, echo=typer.echo)


@app.command()
def compare(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN...", help="run ids (`llmops runs` lists them) or run folders")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the plot's PNG (default: runs/compare-<ids>.png)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
    runs_dir: RunsDirOpt = Path(layout.RUNS),
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Runs side by side (fields and config differences) and a plot: accuracy against cost, loss curves, resource timelines."""
    from control import compare as c

    c.show(run_refs, out, runs_dir, _stack(stack_file) if stack_file.is_file() else None, as_json, echo=typer.echo)


@app.command()
def sweep(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    force: Annotated[bool, typer.Option(help="tune even if the base model already meets the target")] = False,
    backend: Annotated[str, typer.Option(help="local: `llmops train`'s pipeline here; vertex: one CustomJob per value")] = "local",
    machine: Annotated[str | None, typer.Option(help="vertex: machine type from common/catalog.yaml")] = None,
    spot: Annotated[bool, typer.Option(help="vertex: Spot VMs")] = False,
    max_cost: Annotated[float, typer.Option(callback=_number(low=0), help="vertex: refuse a job estimated above this many USD")] = 25.0,
    yes: Annotated[bool, typer.Option("--yes", help="vertex: launch even above --max-cost")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="vertex: print each CreateCustomJob request and stop")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="vertex: submit every job and return (compare them later)")] = False,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Train once per value (`--set data.max_train_examples=500,1000,2000`; several such --sets: their grid), then compare
    the runs: accuracy, wall time, cost per value (`make sweep SET=...`). Exit 1 if a point failed."""
    from control import sweep as s

    if backend not in ("local", "vertex"):
        _fail(f"--backend must be local or vertex, got {backend!r}")
    if backend == "local" and (dry_run or detach or machine or spot):
        _fail("--dry-run, --detach, --machine and --spot are for --backend vertex")
    planned = s.plan_sweep(config, overrides or [], claim=not dry_run)
    _log(f"sweep {planned.id}: {len(planned.points)} runs ({planned.folder})")
    train = s.train_point if backend == "local" else s.vertex_trainer(
        _stack(stack_file), Path(layout.RUNS), dry_run=dry_run, detach=detach, machine=machine, spot=spot, max_cost_usd=max_cost, yes=yes)
    summary = s.run(planned, force=force, log=_log, train=train, save=not dry_run)
    if dry_run:
        return
    typer.echo(s.render_markdown(summary))
    typer.echo(f"written to {planned.folder / s.JSON_FILE} and {planned.folder / s.MD_FILE}")
    if any(p.get("error") for p in summary["points"]):
        raise typer.Exit(1)


@app.command()
def cost(
    run: Annotated[str | None, typer.Option("--run", help="one run's bill (its run-id label), all usage unless --since")] = None,
    since: Annotated[str | None, typer.Option(help="usage from this date on, YYYY-MM-DD (default: the last 30 days)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
    table: Annotated[str | None, typer.Option(help="the export table, project.dataset.table (default: the stack's dataset)")] = None,
    max_gb: Annotated[float, typer.Option(help="refuse a query that would bill more than this many GB")] = 1.0,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """What Google billed the kit (Cloud Billing's BigQuery export) vs what it estimated, per run and surface (`make cost`)."""
    from control import cost as c

    c.run(_stack(stack_file), run_id=run, since=since, as_json=as_json, table=table, max_gb=max_gb, log=typer.echo)


@app.command()
def pipeline(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    backend: Annotated[str, typer.Option(help="local: kfp's local runner here; vertex: a Vertex AI PipelineJob")] = "local",
    target: Annotated[float | None, typer.Option(callback=_number(low=0, high=1), help="the serving model meets it: no retraining "
                                                  "(default: eval.target_accuracy)")] = None,
    gate: Annotated[float, typer.Option(callback=_number(low=0, high=1), help="a challenger below it is never deployed")] = 0.7,
    margin: Annotated[float, typer.Option(callback=_number(low=0, high=1), help="how far a challenger may trail the champion")] = 0.02,
    max_cost: Annotated[float, typer.Option(callback=_number(low=0), help="refuse training estimated above this many USD")] = 25.0,
    canary_percent: Annotated[int, typer.Option(min=1, max=99, help="the challenger's traffic share while watched")] = 10,
    watch_seconds: Annotated[float, typer.Option(callback=_number(low=0), help="how long the canary is watched")] = 600.0,
    poll_seconds: Annotated[float, typer.Option(callback=_number(above=0), help="how often the watch reads Cloud Monitoring")] = 60.0,
    force_gate: Annotated[bool, typer.Option("--force-gate", help="deploy a challenger the gate rejected (the watch still decides)")] = False,
    trail_root: Annotated[str | None, typer.Option(help="where run trails go (default: runs/pipelines, or the models bucket on vertex)")] = None,
    cron: Annotated[str | None, typer.Option(help="create a Vertex AI schedule with this cron instead of one run")] = None,
    image: Annotated[str | None, typer.Option(help="the kit image the steps run on (vertex; default: this source's)")] = None,
    score_machine: Annotated[str | None, typer.Option(help="the machine the serving model is scored on (vertex; default: the serving "
                                                           "machine, or Vertex's default step machine for the embedded model)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the PipelineJob (or Schedule) request and stop")] = False,
    stack_file: StackOpt = DEFAULT_STACK,
) -> None:
    """Retrain only when the serving model fails on new data; roll the new one out as a canary (`make pipeline`)."""
    from control.pipeline import command

    cfg = _config(config, overrides)
    stack = _stack(stack_file)
    s = command.settings_for(cfg.model_dump_json(), stack, "vertex" if cron else backend, trail_root, target, accuracy_gate=gate,
                             margin=margin, max_cost_usd=max_cost, canary_percent=canary_percent, watch_seconds=watch_seconds,
                             poll_seconds=poll_seconds, force_gate=force_gate, image=image, score_machine_type=score_machine)
    command.run(s, stack, dry_run=dry_run, cron=cron, log=_log)


@app.command("pipeline-show")
def pipeline_show(
    run: Annotated[str | None, typer.Option(help="the pipeline run id (default: the newest)")] = None,
    trail_root: Annotated[str, typer.Option(help="where the trails are (a folder or gs:// prefix)")] = "runs/pipelines",
) -> None:
    """Print a pipeline run's decision trail: each step's result, time and cost."""
    from control.pipeline import command

    command.show(trail_root, run, log=_log)


@app.command()
def rollback(stack_file: StackOpt = DEFAULT_STACK) -> None:
    """Put the previous model version back at 100% of the endpoint's traffic (the one a promotion replaced)."""
    from control import rollout

    rollout.rollback(_stack(stack_file), log=_log)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
