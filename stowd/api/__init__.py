"""The HTTP layer: the aiohttp app (app.py), routes/, the Protocols it calls the engine
through (backend.py) and its leaf helpers (common.py)."""
