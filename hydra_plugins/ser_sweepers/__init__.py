"""Hydra plugins of `ser`, found by Hydra's plugin discovery (the `hydra_plugins` namespace)."""
