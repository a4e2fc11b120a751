"""Azure Functions blueprints: thin shells that adapt, call ``shared``, and settle."""
