"""mirecall_jax: multi-interest candidate recall (PinnerSage, MoE two-tower, single-activation transformer) in JAX/Flax."""

__version__ = "0.1.0"
