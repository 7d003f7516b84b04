"""Bulk inference above the API: videos frame by frame, and image sets on Ray Data.

Both drive `fcn_deploy.api.Segmenter` and write fcn-predict's outputs (`outputs`); nothing below
the API learns about frames or clusters. `batch` imports Ray only when it is used (the ``ray``
extra).
"""
