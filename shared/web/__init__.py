"""What people look at: the timeline page and the local server (``psaudit serve``)."""
