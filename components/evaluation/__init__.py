"""Evaluation on device profiles: the measuring process and the report with its plots."""
