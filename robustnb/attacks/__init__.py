"""Attacks: torchattacks for the standard ones, and the attacks no library ships, in its ``Attack`` style.

Images are in ``[0, 1]`` and epsilon is a radius in the same units, in the norm of the attack's registry entry
(L-inf, ``8/255``, unless the entry says ``L2``: :func:`robustnb.attacks.base.budget`). One file per kind:

==================================  ==================================================================
``robustnb.attacks.base``           input checks (epsilon, steps, the ball), :func:`perturb` (batches)
``robustnb.attacks.standard``       the torchattacks attacks by name (one row each, with its norm:
                                    ``STANDARD_ATTACKS``);
                                    :func:`robustness_curve`
``robustnb.attacks.entropy``        the entropy (bit-rate) attack on split models, :func:`entropy_attack`
``robustnb.attacks.adaptive``       the entropy attack through a defense (BPDA or unrolled)
``robustnb.attacks.transfer``       ensemble transfer attacks: MI-FGSM, SAM, CSE, CWA
``robustnb.attacks.noise``          salt & pepper noise (decision-based, no gradient)
==================================  ==================================================================

Every attack is registered by name in :data:`robustnb.registry.ATTACKS` (transfer attacks, which take a
list of surrogates instead of one model, in :data:`robustnb.registry.TRANSFER_ATTACKS`).
"""

from robustnb.attacks.base import EPS_MAX, budget, check_epsilon, check_in_ball, eps_label, perturb  # noqa: F401
from robustnb.attacks.standard import STANDARD, make_attack, robustness_curve  # noqa: F401
from robustnb.attacks.entropy import EntropyAttack, entropy_attack  # noqa: F401
from robustnb.attacks.adaptive import AdaptiveEntropyAttack, DefendedModel, adaptive_entropy_attack, bpda  # noqa: F401
from robustnb.attacks.transfer import CSE, CWA, SAM, LogitEnsemble, make_transfer_attack  # noqa: F401
from robustnb.attacks.noise import SaltAndPepper, accuracy_at_budgets  # noqa: F401
