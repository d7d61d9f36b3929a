"""The dicomlab command line: local stack, synthetic data, manifests, labeling, training."""
