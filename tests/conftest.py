"""Test-session setup: 8 fake CPU devices, so multi-device code is exercised in every run.

Single-device tests build their mesh from `jax.devices()[:1]`; the flag must be set before JAX
initialises its backend, which is why it lives here.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
