"""Serving: checkpoint -> artifact (export.py), artifact -> recommendations (retriever.py), HTTP (server.py).

Importing this package loads no model code; `mirecall_jax.serving.export` (which needs the models)
is imported explicitly by serve_export.py.
"""

from mirecall_jax.serving.artifact import FORMAT_VERSION, ArtifactError
from mirecall_jax.serving.retriever import Recommendation, Request, Retriever

__all__ = ["ArtifactError", "FORMAT_VERSION", "Recommendation", "Request", "Retriever"]
