"""Scheduled evaluation: reading predictions and truth, the join, metric rows, drift, retraining
rules, the report and what follows the job.
"""
