"""dicomlab training: MONAI DenseNet121 multi-label training from labelled DICOMs."""
