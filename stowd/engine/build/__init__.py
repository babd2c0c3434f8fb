"""The classic Dockerfile builder behind `POST /build` (dockerd's `builder/dockerfile`)."""
