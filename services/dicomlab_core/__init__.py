"""dicomlab's shared core: config, logging, errors, the Orthanc client, the object store, metrics.

Every service and the training package import this package; services never import each other.
"""

__version__ = "0.1.0"
