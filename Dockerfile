# syntax=docker/dockerfile:1
# The service image (ECR): ingest (X filtered stream -> Kafka), the reply dispatcher and the web
# app (ticket tracking page, agent dashboard, API). No pyspark and no TensorFlow: only the
# [serve,kafka,aws] extras (aws: boto3, for secrets from AWS Secrets Manager).
#
#   docker build -t sparktweet-service .
#   docker run -p 8080:8080 -e SPARKTWEET_DB_URL=postgresql+psycopg://... sparktweet-service
#   docker run sparktweet-service sparktweet dispatch --mode live     # same image, other command
#   docker run sparktweet-service sparktweet ingest
#
# Secrets: from the environment (e.g. an ECS task definition's "secrets"), or set
# SPARKTWEET_SECRETS_SOURCE=aws and SPARKTWEET_SECRET_ID=<name> and the entrypoint loads the
# secret's JSON object into the environment first (sparktweet/secret_store.py).
# The HEALTHCHECK probes the web app's /healthz; disable it (--no-healthcheck, or no
# healthCheck in the task definition) for the dispatcher and ingest containers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPARKTWEET_HOME=/app \
    PORT=8080

RUN groupadd --system --gid 10001 sparktweet \
 && useradd --system --uid 10001 --gid sparktweet --home-dir /app --no-create-home --shell /usr/sbin/nologin sparktweet

WORKDIR /app
# The package is installed into site-packages; /app keeps conf/ (read through SPARKTWEET_HOME)
# and var/ (the SQLite ticket store when no SPARKTWEET_DB_URL is given).
COPY requirements-ci.txt setup.py README.md /tmp/src/
COPY sparktweet/ /tmp/src/sparktweet/
COPY conf/ /app/conf/
# requirements-ci.txt pins versions; pip constraints cannot carry extras, so they are stripped.
RUN sed 's/\[[^]]*\]//' /tmp/src/requirements-ci.txt > /tmp/constraints.txt \
 && pip install -c /tmp/constraints.txt "/tmp/src[serve,kafka,aws]" \
 && rm -rf /tmp/src /tmp/constraints.txt \
 && mkdir -p /app/var \
 && chown sparktweet:sparktweet /app/var

USER sparktweet
VOLUME ["/app/var"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]
ENTRYPOINT ["python", "-m", "sparktweet.secret_store", "--"]
CMD ["sparktweet", "serve", "--host", "0.0.0.0", "--port", "8080"]
