# The app (dashboard + JSON API on :8001). The same image runs the Dask scheduler and
# workers in compose.yaml: client, scheduler and workers must have the same versions,
# and workers import app.* to run jobs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROCESSING_DATA_DIR=/data

WORKDIR /app

# Dependencies from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY app ./app
COPY components ./components
COPY client ./client
COPY static ./static
# Editable: the server serves static/ from beside the package.
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 1000 processing \
    && mkdir -p /data \
    && chown processing /data

# A named volume mounted on /data starts with this owner, for the app and the workers alike.
USER processing

EXPOSE 8001
# Binding 0.0.0.0 requires PROCESSING_API_TOKEN (or PROCESSING_ALLOW_INSECURE=1): compose sets the token.
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0"]
