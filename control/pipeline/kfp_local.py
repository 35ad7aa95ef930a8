"""kfp's local runner, with the CEL conditions kfp 2.16 cannot read.

kfp 2.16.0's local orchestrator evaluates a `dsl.If` condition by replacing the channel name inside the compiled
CEL (`inputs.parameter_values['pipelinechannel--gate-Output'] == 'deploy'`) and `eval`-ing the rest as Python: the
quotes clash and `true` / `!(` are not Python, so every condition is False and no branch runs. kfp 2.17 resolves the
CEL form first (kubeflow/pipelines kfp/local/orchestrator/enhanced_dag_orchestrator.py), but 2.17.x does not resolve
against constraints.txt. `use()` does the same resolution before kfp's own evaluator; drop it with the move to 2.17
(tests/control/test_pipeline.py fails once kfp's evaluator reads the CEL itself).
"""

from __future__ import annotations

import re

_CEL_PARAM = re.compile(r"inputs\.parameter_values\['([^']+)'\]")


def use() -> None:
    from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

    if getattr(ConditionEvaluator.evaluate_condition, "reads_cel", False):
        return
    kfp_evaluate = ConditionEvaluator.evaluate_condition

    def evaluate_condition(condition: str, io_store) -> bool:
        def value(m: re.Match) -> str:
            return repr(ConditionEvaluator._resolve_pipeline_channel(m.group(1), io_store))

        expr = re.sub(r"!\s*\(", "not (", (condition or "").replace("&&", " and ").replace("||", " or "))
        expr = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", expr))
        return kfp_evaluate(_CEL_PARAM.sub(value, expr), io_store)  # values last: a value's text is never rewritten

    evaluate_condition.reads_cel = True
    ConditionEvaluator.evaluate_condition = staticmethod(evaluate_condition)
