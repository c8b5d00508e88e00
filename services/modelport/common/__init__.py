"""Plumbing shared by the three services: servers, errors, metrics, logs."""
