# The kit image: one image, two entrypoints, and the retraining pipeline's steps. `make image` builds it with Cloud Build
# from the repo root and tags it by a content hash of everything below (control/image.py); nobody needs Docker locally.
#
#   training job   python -m trainer.task ...   (the CustomJob's containerSpec.command, control/job.py)
#   serving        python -m serving            (CMD: Vertex starts it with AIP_* set, control/deploy.py)
#   pipeline steps python3 -m kfp.dsl.executor_main ... (each kfp component's command, control/pipeline/definition.py)
#
# GPU: torch's Linux wheel on PyPI bundles the CUDA 13 user-space libraries (nvidia-*-cu13 wheels), so no CUDA
# base image is needed; the host's NVIDIA driver (R580 or newer for CUDA 13) is mounted into the container by
# Vertex AI under /usr/local/nvidia. The dependency set is proven by resolution in the tests
# (tests/control/test_image_resolution.py): same pins as constraints.txt, for manylinux x86_64 and CPython 3.11.
#
# The build args' defaults are the production build's; `make image` passes none. A local or CI build
# (`make image-local`, the container tests) sets both, and that is the only difference (image/local.py, docs/images.md):
# a base made from Debian's packages (no registry to pull from) and a CPU wheel of the pinned torch.
# No `# syntax=` line: BuildKit would pull its frontend image; the engine's built-in frontend reads this file.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
# A find-links page holding a torch wheel to take instead of PyPI's (empty: PyPI's CUDA build).
ARG TORCH_FIND_LINKS=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/nvidia/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64

# Dependencies first: this layer (a few GB: torch and its CUDA libraries) changes only when the pins do.
COPY constraints.txt image/requirements.in image/pipeline-steps.in /tmp/deps/
# A build behind a TLS-inspecting proxy passes its CA bundle as the secret `ca_bundle`: mounted for this step only,
# never written to a layer. Without it pip trusts the public CAs, as on Cloud Build.
RUN --mount=type=secret,id=ca_bundle \
    python -m venv /opt/venv \
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install ${TORCH_FIND_LINKS:+--find-links=$TORCH_FIND_LINKS} -c /tmp/deps/constraints.txt -r /tmp/deps/requirements.in -r /tmp/deps/pipeline-steps.in \
    && rm -rf /tmp/deps

# Then the kit's source: small, and the only layer most changes rebuild. No model is baked in.
WORKDIR /app
COPY common/ common/
COPY trainer/ trainer/
COPY serving/ serving/
COPY control/ control/
COPY configs/ configs/
COPY data/ data/

# Non-root. The app's files stay root-owned and read-only to it; everything it writes goes under /tmp.
RUN useradd --uid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app
USER 10001
ENV HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    LLMOPS_CACHE=/tmp/llmops-kit \
    LLMOPS_SCRATCH=/tmp/llmops \
    SERVING_HOST=0.0.0.0 \
    AIP_HTTP_PORT=8080
EXPOSE 8080
CMD ["python", "-m", "serving"]
