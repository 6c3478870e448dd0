# zerolabel ML backend: thin, CPU only, no torch. Label Studio talks to it on port 9090.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY backend ./backend
COPY worker ./worker
RUN --mount=type=cache,target=/root/.cache/pip pip install ".[backend]"

EXPOSE 9090
# One process with threads: requests mostly wait on Redis, and /setup state stays in one place.
CMD ["gunicorn", "--bind", "0.0.0.0:9090", "--workers", "1", "--threads", "16", \
     "--timeout", "120", "backend.wsgi:app"]
