# zerolabel ML backend: thin, CPU only, no torch. Label Studio talks to it on port 9090.
# Build from the repository root: docker build -f docker/backend.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The library without its worker extra (no torch), then the HTTP server package.
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY backend ./backend
RUN --mount=type=cache,target=/root/.cache/pip pip install . ./backend

EXPOSE 9090
# waitress: requests are read whole before a thread takes them; ZEROLABEL_HTTP_THREADS threads.
CMD ["zerolabel", "serve", "--host", "0.0.0.0", "--port", "9090"]
