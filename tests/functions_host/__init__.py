"""A stand-in Functions host that drives ``function_app.py`` inside the real Python worker library
(``azure-functions-runtime``) over its own request types, and serves the Service Bus extension's
Settlement gRPC service. See ``host.py``."""
