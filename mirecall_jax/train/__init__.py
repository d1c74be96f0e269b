"""Training infrastructure: train state, partitioning (mesh + shardings), checkpointing."""
