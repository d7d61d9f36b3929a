"""The self-hosted labeling workflow: database and migrations, jobs, the leased queue, accounts, review,
results, export, DICOM SR write-back, the JSON API and the browser UI routes, metrics.

Imports :mod:`dicomlab_labeling.consensus` for consolidation, never the Ground Truth wing.
"""
