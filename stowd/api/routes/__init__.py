"""One module per resource: parse the request, call the backend, shape the answer."""
