"""Pure ML steps of Distillery: typed config and paths in, files and a small result out.

Nothing here imports prefect or mlflow: orchestration and tracking live in `flows/`.
"""
