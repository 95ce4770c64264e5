-- Extra databases on first start (POSTGRES_DB creates `mlflow`): Prefect's and MLflow auth's.
CREATE DATABASE prefect;
CREATE DATABASE mlflow_auth;
