-- One server, one database per component.
CREATE DATABASE mlflow OWNER tuneops;
CREATE DATABASE prefect OWNER tuneops;
