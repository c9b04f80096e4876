# Build stage: resolve the locked dependency set into a virtualenv.
FROM python:3.11-slim-bookworm AS build
# The virtualenv is built at the path it runs from: its scripts' #! lines
# (bin/readybot) are absolute, so a venv moved elsewhere cannot start.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/readybot \
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
# An empty secrets directory: without a mounted Secret, READYBOT_SECRETS_DIR
# still names a directory, and secrets can come from the environment.
RUN groupadd --system --gid 10001 readybot \
 && useradd --system --uid 10001 --gid readybot --home-dir /var/lib/readybot --create-home readybot \
 && mkdir -p /etc/readybot/secrets
COPY --from=build /opt/readybot /opt/readybot
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
