"""Gateways that serve from the registry: the LiteLLM router (:mod:`.litellm`) and the serving metrics (:mod:`.metrics`).

Nothing here is imported by the rest of modelctl; :mod:`.litellm` imports LiteLLM itself (the
``modelctl[litellm]`` extra), :mod:`.metrics` uses prometheus_client when it is installed.
"""
