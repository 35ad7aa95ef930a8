"""The kfp v2 pipeline: each component is a few lines that call one function of control/pipeline/steps.py.

    read_data -> score_champion -> meets the target? -- yes --> no_training                 (no GPU, $0)
                                                     -- no  --> estimate_cost -> train -> gate -- no --> rejected
                                                                                              -- yes --> canary (promote | roll back)

Components are lightweight Python components: kfp ships each function's source to the step's container, which is
the kit image on Vertex (it holds control/ and, from image/pipeline-steps.in, kfp and google-cloud-aiplatform at the
pins) and this venv under kfp's local runner. The bodies import the kit, so no stage is written twice, and nothing is
installed per step (`install_kfp_package=False`: kfp's default pip-installs itself at each step's start, which the
image's read-only venv and a step without network would refuse).
"""

from kfp import compiler, dsl

from common import catalog
from control.pipeline.steps import DEPLOY, REJECT, RETRAIN, STOP

PIPELINE_NAME = "llmops-retrain"
LOCAL_IMAGE = "python:3.11"  # what kfp's local subprocess runner is told (it runs in this venv and ignores it)


def _read_data(settings: str, run_id: str) -> str:
    from control.pipeline import settings as ps
    from control.pipeline import steps

    return steps.read_data(ps.parse(settings), run_id)


def _score_champion(settings: str, run_id: str) -> str:
    from control.pipeline import settings as ps
    from control.pipeline import steps

    return steps.score_champion(ps.parse(settings), run_id)


def _no_training(settings: str, run_id: str):
    from control.pipeline import settings as ps
    from control.pipeline import steps

    steps.no_training(ps.parse(settings), run_id)


def _estimate_cost(settings: str, run_id: str) -> float:
    from control.pipeline import settings as ps
    from control.pipeline import steps

    return steps.estimate_cost(ps.parse(settings), run_id)


def _train(settings: str, run_id: str) -> str:
    from control.pipeline import settings as ps
    from control.pipeline import steps

    return steps.train(ps.parse(settings), run_id)


def _gate(settings: str, run_id: str, run_dir: str) -> str:
    from control.pipeline import settings as ps
    from control.pipeline import steps

    return steps.gate(ps.parse(settings), run_id, run_dir)


def _rejected(settings: str, run_id: str):
    from control.pipeline import settings as ps
    from control.pipeline import steps

    steps.rejected(ps.parse(settings), run_id)


def _canary(settings: str, run_id: str, run_dir: str) -> str:
    from control.pipeline import settings as ps
    from control.pipeline import steps

    return steps.canary(ps.parse(settings), run_id, run_dir)


def on_machine(task, machine: catalog.Machine | None):
    """Ask Vertex AI Pipelines for `machine`'s CPUs, memory and GPUs for this step (the local runner ignores it); None:
    Vertex's default step machine (e2-standard-4)."""
    if machine is None:
        return task
    task.set_cpu_limit(str(machine.vcpus)).set_memory_limit(f"{machine.memory_gb}G")
    if machine.accelerator_type:
        task.set_accelerator_type(machine.accelerator_type).set_accelerator_limit(machine.accelerator_count)
    return task


def build(image: str = LOCAL_IMAGE, score_machine: catalog.Machine | None = None):
    """The pipeline, its steps running on `image` (the kit image on Vertex), the champion scored on `score_machine`
    (a model that needs a GPU: the machine it is served on)."""

    def component(fn):
        return dsl.component(fn, base_image=image, install_kfp_package=False)

    read_data, score_champion, no_training, estimate_cost, train, gate, rejected, canary = map(component, (
        _read_data, _score_champion, _no_training, _estimate_cost, _train, _gate, _rejected, _canary))

    # Two dsl.If, not If/Else: each branch names its condition, and kfp's local runner reads plain conditions only.
    @dsl.pipeline(name=PIPELINE_NAME, description="Retrain only when the serving model fails on new data; roll out as a canary.")
    def retrain(settings: str, run_id: str = ""):
        data = read_data(settings=settings, run_id=run_id).set_display_name("read and validate the new data")
        rid = data.output
        champ = on_machine(score_champion(settings=settings, run_id=rid).set_display_name("score the serving model"), score_machine)
        with dsl.If(champ.output == STOP, name="champion-meets-target"):
            no_training(settings=settings, run_id=rid).set_display_name("no training needed")
        with dsl.If(champ.output == RETRAIN, name="retrain"):
            cost = estimate_cost(settings=settings, run_id=rid).set_display_name("estimate the training cost")
            trained = train(settings=settings, run_id=rid).after(cost).set_display_name("train the challenger")
            judged = gate(settings=settings, run_id=rid, run_dir=trained.output).set_display_name("gate: challenger vs champion")
            with dsl.If(judged.output == DEPLOY, name="passed-gate"):
                canary(settings=settings, run_id=rid, run_dir=trained.output).set_display_name("canary, then promote or roll back")
            with dsl.If(judged.output == REJECT, name="failed-gate"):
                rejected(settings=settings, run_id=rid).set_display_name("rejected at the gate")
        for task in (data, champ, judged):
            task.set_caching_options(False)  # the data and the endpoint change between runs with the same inputs

    return retrain


def compile_to(path: str, image: str = LOCAL_IMAGE, score_machine: catalog.Machine | None = None) -> str:
    """Compile with kfp's own compiler (it checks the graph); the PipelineSpec YAML's path."""
    compiler.Compiler().compile(build(image, score_machine), package_path=path)
    return path
