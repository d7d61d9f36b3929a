"""Consensus over several readers' answers: consolidation (majority, Dawid–Skene) and agreement statistics.

Pure computation shared by both wings; imports neither :mod:`dicomlab_labeling.groundtruth` nor
:mod:`dicomlab_labeling.workflow` (it also runs inside the Ground Truth Lambda zip).
"""
