"""Split computing with a learned entropy model (Zhang et al.): the model, its rate, the cached zoo.

==============================  =====================================================================
``robustnb.split.model``        :class:`SplitModel` (edge encoder, entropy model, cloud classifier),
                                the backbones and entropy models (registered by name)
``robustnb.split.rate``         bits from likelihoods (:func:`bits`, the one place), real rANS bytes,
                                bit maps, the training rate term
``robustnb.split.zoo``          how split models are trained per preset; the cached loaders;
                                the tuning hold-out no split model trains on
==============================  =====================================================================
"""

from robustnb.split.model import (LAMBDAS, LogitsOnly, SplitModel, build_split_model, check_entropy_model,  # noqa: F401
                                  check_split_arch)
from robustnb.split.zoo import (TUNING_HOLDOUT_PER_CLASS, SplitTrainConfig, get_split_model, key_columns,  # noqa: F401
                                load_split_models, model_grid, training_pool, tuning_holdout)
