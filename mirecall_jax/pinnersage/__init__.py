"""PinnerSage-style interests: Ward clustering of a user's history, medoids, importance, selection."""

from mirecall_jax.pinnersage.medoids import cluster_importance, medoids, select_interests
from mirecall_jax.pinnersage.ward import WardMerges, cluster_users, ward_linkage, ward_merges

__all__ = ["WardMerges", "cluster_importance", "cluster_users", "medoids", "select_interests",
           "ward_linkage", "ward_merges"]
