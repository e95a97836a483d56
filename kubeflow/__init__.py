"""Kubeflow Pipelines (v2) and Vertex AI Pipelines: compile the MARCO graph there."""
