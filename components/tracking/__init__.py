"""MLflow lineage: a parent run per pipeline run, a child run per round, the model registry."""
from components.tracking.lineage import Tracker, configure_mlflow, git_commit

__all__ = ["Tracker", "configure_mlflow", "git_commit"]
