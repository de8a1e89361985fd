# autoroute in a container: CPU torch by default, every dependency installed from requirements.lock with its hash.
#
#   docker build -t autoroute .                                   # CPU (the default; ~1 GB smaller than CUDA)
#   docker build -t autoroute:cuda --build-arg TORCH_VARIANT=cu126 .
#   docker run -p 4000:4000 -e AUTOROUTE_API_KEY=... -e OPENAI_API_KEY=... -v autoroute-data:/data autoroute
#
# The container listens on 0.0.0.0, so it serves only with client keys: deploy/config.yaml asks for
# AUTOROUTE_API_KEY (serve refuses a public bind without keys unless given --insecure).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    AUTOROUTE_STORE=sqlite:////data/autoroute.db

# cpu: torch's CPU build, hash-checked like everything else. Anything else (cu126, cu128, ...) names the CUDA wheel
# index of that variant: torch and its NVIDIA libraries then come from there, without hashes.
ARG TORCH_VARIANT=cpu

WORKDIR /app
# Dependencies first, as their own layer: an edit to the code does not reinstall them.
COPY requirements.lock ./
RUN if [ "$TORCH_VARIANT" = cpu ]; then \
        pip install --no-cache-dir --require-hashes --no-deps \
            --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock; \
    else \
        grep -v '^torch==' requirements.lock > /tmp/without-torch.lock \
        && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/without-torch.lock \
        && pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/$TORCH_VARIANT" torch==2.13.0; \
    fi \
 && useradd --system --create-home --uid 10001 autoroute \
 && mkdir /data && chown autoroute /data

COPY pyproject.toml README.md ./
COPY router_plugins ./router_plugins
COPY proxy ./proxy
RUN pip install --no-cache-dir --no-deps . && pip check
COPY config.yaml ./
COPY deploy ./deploy
COPY examples ./examples

USER autoroute
# Distil the static embedding table at build time, so the first start does not pay for it.
RUN autoroute build-embeddings --data-dir /data
VOLUME /data
EXPOSE 4000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/health/readiness')"
CMD ["autoroute", "serve", "--config", "/app/deploy/config.yaml", "--host", "0.0.0.0", "--port", "4000", "--data-dir", "/data"]
