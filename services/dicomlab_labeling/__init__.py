"""dicomlab labeling service."""
