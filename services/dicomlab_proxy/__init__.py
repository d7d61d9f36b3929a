"""dicomlab proxy service."""
