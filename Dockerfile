# Custom SDK worker container for newsbeam on Dataflow, Flink and Spark.
#
# The base image must carry the same Beam and Python versions as the machine that
# launches the job (apache-beam 2.77.0, Python 3.11), or the runner refuses the workers.
# Installing the project here means workers start without pip at boot and without
# --setup_file (passing both is harmless).
#
# Build and push from the repository root:
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/newsbeam-worker:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/newsbeam-worker:0.1.0
# then run with --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/newsbeam-worker:0.1.0
# (Dataflow), or --environment_type=DOCKER --environment_config=IMAGE (Flink, Spark).
FROM apache/beam_python3.11_sdk:2.77.0

ARG BEAM_VERSION=2.77.0

WORKDIR /opt/newsbeam
# Only what the package needs: a build context filter is not required.
COPY setup.py pyproject.toml ./
COPY schemas ./schemas
COPY transforms ./transforms
COPY pipelines ./pipelines

# Pin Beam to the image's own version so that resolving the project's dependencies can
# never replace the SDK (and the pyarrow/protobuf builds it was tested with).
RUN pip install --no-cache-dir "apache-beam==${BEAM_VERSION}" . \
    && python -c "import apache_beam, pipelines.ingest; \
from transforms.topics.assign import load_category_map; load_category_map(); \
assert apache_beam.__version__ == '${BEAM_VERSION}', apache_beam.__version__"

# The base image's ENTRYPOINT (/opt/apache/beam/boot, the SDK harness) is kept as is.
