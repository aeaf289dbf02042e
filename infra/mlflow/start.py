"""Start the MLflow server with its database password from Secret Manager (kept out of argv)."""

import os
from urllib.parse import quote

from google.cloud import secretmanager

secret = secretmanager.SecretManagerServiceClient().access_secret_version(name=os.environ["MLFLOW_DB_PASSWORD_SECRET"])
password = quote(secret.payload.data.decode(), safe="")
user = os.environ.get("MLFLOW_DB_USER", "mlflow")
host = os.environ["MLFLOW_DB_HOST"]
database = os.environ.get("MLFLOW_DB_NAME", "mlflow")
env = dict(os.environ)
# mlflow server reads its options from the environment as well: the URI stays out of `ps`.
env["MLFLOW_BACKEND_STORE_URI"] = f"postgresql://{user}:{password}@{host}:5432/{database}"
env["MLFLOW_ARTIFACTS_DESTINATION"] = os.environ["MLFLOW_ARTIFACTS_BUCKET"]
# All interfaces of the container: the VM's firewall decides who reaches port 5000 (trainers, IAP).
host = "0.0.0.0"  # noqa: S104 - the container's interfaces; the firewall decides who reaches it
argv = ["mlflow", "server", "--host", host, "--port", "5000", "--workers", os.environ.get("MLFLOW_WORKERS", "2")]
os.execvpe("mlflow", argv, env)  # noqa: S606 - replaces this process; argv carries no secret
