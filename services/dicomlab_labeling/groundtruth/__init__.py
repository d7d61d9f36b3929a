"""The Ground Truth wing: pre-/post-annotation callbacks (HTTP routes and Lambda handlers), the Lambda zip,
job creation and the worker template, for teams that still run SageMaker Ground Truth.

Imports :mod:`dicomlab_labeling.consensus` and the service config, never the self-hosted workflow; the
callbacks and Lambda handlers import no Flask or database code (they run in the Lambda zip).
"""
