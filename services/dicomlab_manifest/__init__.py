"""dicomlab manifest service."""
