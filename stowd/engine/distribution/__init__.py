"""Registries: pull and push (auth, transport, manifests), wired by engine.py."""
