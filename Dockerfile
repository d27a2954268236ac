# Serving image: onnxruntime + FastAPI + Pillow + numpy and the project's torch-free runtime code (no PyTorch).
#
#   docker build -t distill-serve .                                   # model mounted at run time:
#   docker run --rm -p 8000:8000 -v "$PWD/runs/exp:/models:ro" distill-serve   # serves /models/model.onnx
#   mkdir -p models && cp runs/exp/model.onnx models/ &&                # or baked into the image:
#   docker build --build-arg MODEL=models/model.onnx -t distill-serve:baked .
#
# BASE_IMAGE must provide python3 (3.10+) with the venv module: python:3.11-slim (python at /usr/local/bin)
# or a debootstrapped Debian bookworm with python3 + python3-venv (python at /usr/bin); both work because the
# venv is created by whichever interpreter the base has and the runtime stage uses the same base.
# Without a Docker daemon: scripts/container/build_and_run.sh (buildah, chroot isolation).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG MODEL=""
# Offline installs (air-gapped hosts, and the arm64 build under emulation): a wheelhouse mounted at build time,
# e.g. buildah bud -v $PWD/wheels:/wheels:ro --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1
# (scripts/container/build_and_run.py --wheelhouse). Unset by default: pip uses the package index.
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN set -eu; PY="$(command -v python3 || command -v python)"; "$PY" -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --upgrade --quiet pip setuptools
COPY scripts/container/requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --quiet -r /tmp/requirements.txt
COPY . /src
# Serving code only: serve/ plus the torch-free part of distill/ and export/ it imports (serving_files.txt);
# no trainer, exporter or benchmark. Its dependencies are the pinned runtime set above (no torch, no onnx).
RUN set -eu; /opt/venv/bin/python /src/scripts/container/prune_to_serving.py /src; \
    /opt/venv/bin/pip install --quiet --no-deps /src; \
    /opt/venv/bin/pip uninstall --quiet -y pip setuptools; \
    find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +; \
    find /opt/venv/lib -depth -type d -name edge_bench -path '*/site-packages/*' -exec rm -rf {} +; \
    mkdir -p /models; \
    if [ -n "$MODEL" ]; then \
        [ -f "/src/$MODEL" ] || { echo "MODEL=$MODEL not found in the build context (put it under models/)" >&2; exit 1; }; \
        cp "/src/$MODEL" /models/model.onnx; \
    fi; \
    /opt/venv/bin/python -c "import serve.app, sys, importlib.util as u; assert 'torch' not in sys.modules; assert u.find_spec('edge_bench') is None"

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="distill-serve" \
      org.opencontainers.image.description="Distilled image classifier served with FastAPI + onnxruntime"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    DISTILL_SERVE_HOST=0.0.0.0 DISTILL_SERVE_PORT=8000 DISTILL_SERVE_MODEL=/models/model.onnx
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin distill
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=10001:10001 /models /models
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('DISTILL_SERVE_PORT', '8000'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]
ENTRYPOINT ["/opt/venv/bin/python", "-m", "serve"]
CMD []
