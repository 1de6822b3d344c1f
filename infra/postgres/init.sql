-- The team servers' databases, made on first start of the compose file's PostgreSQL.
CREATE DATABASE mlflow;
CREATE DATABASE labelstudio;
CREATE DATABASE prefect;
