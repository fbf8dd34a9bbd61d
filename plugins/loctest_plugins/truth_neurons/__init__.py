"""The truth-neurons method (Li et al. 2025) behind the ``ig-truth-neurons`` locator: the integrated-gradients
engine (:mod:`.ig`), candidate selection and testing (:mod:`.selection`) and the on-disk attribution cache
(:mod:`.cache`)."""
