"""Continuous model updates: a Kubeflow Pipelines (v2) pipeline that retrains only when the serving model fails on new data.

    settings.py    the pipeline's settings, validated once at the edge (`llmops pipeline`) and passed to every step
    steps.py       each step as a plain function of the settings: read data, score the champion, estimate, train, gate, canary
    trail.py       the run's decision trail (each step's result, time and cost), where `llmops pipeline-show` reads it
    definition.py  the kfp components (thin: each calls one function of steps.py) and the @dsl.pipeline that wires them
    submit.py      run it locally on kfp's own runner, or compile it into a Vertex AI PipelineJob / Schedule request
"""
