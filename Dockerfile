# MicroFlow worker and flow image: CUDA build of torch + the microflow package.
# Entrypoints:
#   microflow event ...            run one earthquake-response job
#   dask worker tcp://SCHED:8786 --resources GPU=1 --nthreads 1
#                                  a GPU Dask worker for the pipeline's tile tasks
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch from PyPI on linux/x86_64 is the CUDA build (with its nvidia-* wheels).
RUN pip install torch==2.13.0

WORKDIR /opt/microflow
COPY pyproject.toml README.md ./
COPY model ./model
COPY pipeline ./pipeline
COPY flows ./flows
COPY bench ./bench
RUN pip install .

ENTRYPOINT ["microflow"]
CMD ["--help"]
