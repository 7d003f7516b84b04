"""fcn_train: the FCN trainer and evaluator (``fcn-train``, ``fcn-eval``), installed from
``train/``."""
