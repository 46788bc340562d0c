FROM python:3.11-slim
WORKDIR /srv/baton
COPY pyproject.toml README.md ./
COPY app ./app
COPY tasks ./tasks
COPY workflows ./workflows
RUN pip install --no-cache-dir .
USER nobody
