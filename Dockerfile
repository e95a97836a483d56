# The MARCO pipeline's container: TFX 1.16's image plus this project, with exactly the
# package versions of uv.lock (the lock bootstrap.sh installs locally).
#
# Vertex AI Pipelines and Kubeflow Pipelines run every component in it, Vertex AI
# training jobs run the Trainer's replicas in it, and Dataflow uses it as the Beam
# worker container. It lives at the repository root because `tfx pipeline create
# --build-image` builds ./Dockerfile with the current folder as context; by hand:
#   docker build -t IMAGE . && docker push IMAGE
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# The uv release bootstrap.sh pins, to read the lock the same way.
COPY --from=ghcr.io/astral-sh/uv:0.9.30 /uv /usr/local/bin/uv

# TFX's container entry points import TensorFlow before any project code runs, so
# tf-keras (Keras 2, which TFX 1.16 needs) is chosen here for every process.
ENV TF_USE_LEGACY_KERAS=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never

# kubeflow/runner.py (CONTAINER_PROJECT_DIR) points components at files below here.
WORKDIR /pipeline

# Dependencies first, in their own layer: every package uv.lock pins, at its locked
# version, without resolving anything (--frozen, --no-deps), into the image's own
# Python, the one TFX's entry points and Beam's worker boot run.
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --no-emit-project --no-hashes --no-header \
        --output-file /tmp/requirements.txt \
    && uv pip install --system --python "$(command -v python)" --no-deps \
        --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself, editable so that its data files stay at /pipeline/schemas.
COPY . .
RUN uv pip install --system --python "$(command -v python)" --no-deps --editable . \
    && python -c "import components, kubeflow, pipeline, schemas; import tfx, apache_beam"
