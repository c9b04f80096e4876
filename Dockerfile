# Build stage: resolve the locked dependency set into a virtualenv.
FROM python:3.11-slim-bookworm AS build
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
# Dependencies first, so a code change does not reinstall them.
RUN uv sync --locked --no-dev --no-install-project
COPY bot ./bot
COPY commands ./commands
COPY config ./config
RUN uv sync --locked --no-dev --no-editable

# Runtime stage: the virtualenv only, run as an unprivileged user.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 readybot \
 && useradd --system --uid 10001 --gid readybot --home-dir /var/lib/readybot --create-home readybot
COPY --from=build /app/.venv /opt/readybot
# READYBOT_SECRETS_DIR is where the Secret is mounted (a path, not a secret).
# hadolint ignore=DL3064
ENV PATH="/opt/readybot/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    READYBOT_CONFIG=/etc/readybot/config.yaml \
    READYBOT_SECRETS_DIR=/etc/readybot/secrets
WORKDIR /var/lib/readybot
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["readybot"]
CMD ["run"]
