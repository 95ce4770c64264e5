# The Prefect worker's image: the project and its pinned dependencies (CPU torch), plus dvc-s3.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/distillery
COPY pyproject.toml README.md ./
COPY components components
COPY flows flows
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
    -e . "dvc-s3>=3.2" "prefect-dask==0.3.7"
WORKDIR /workspace
