FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# Set to a CPU-only wheel index to keep the image small; by default pip's index gives the CUDA build.
ARG TORCH_INDEX_URL=

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY router_plugins ./router_plugins
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
 && pip install --no-cache-dir . \
 && useradd --system --create-home --uid 10001 autoroute \
 && mkdir /data && chown autoroute /data
COPY config.yaml ./
COPY examples ./examples

USER autoroute
# Distil the static embedding table at build time, so the first start does not pay for it.
RUN autoroute build-embeddings --data-dir /data
VOLUME /data
EXPOSE 4000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/health/liveness')"
CMD ["autoroute", "serve", "--config", "/app/config.yaml", "--host", "0.0.0.0", "--port", "4000", "--data-dir", "/data"]
