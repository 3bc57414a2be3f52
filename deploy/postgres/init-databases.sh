#!/usr/bin/env bash
# Creates the Airflow and MLflow roles and databases in the compose stack's Postgres.
# Mounted into /docker-entrypoint-initdb.d, so it runs once, when the data volume is empty;
# to re-run it, remove the volume (docker compose down -v) or create the roles by hand.
# Passwords come from AIRFLOW_DB_PASSWORD and MLFLOW_DB_PASSWORD (see deploy/compose.env.example).
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"

# psql variables (:'name') quote the passwords as SQL literals.
psql -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" \
    --set airflow_password="${AIRFLOW_DB_PASSWORD}" \
    --set mlflow_password="${MLFLOW_DB_PASSWORD}" <<'SQL'
CREATE ROLE airflow WITH LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow WITH LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL

echo "init-databases: created databases airflow and mlflow"
