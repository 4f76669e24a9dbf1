"""The passdb chain: ``runner.py`` runs the passdbs in order for one login attempt;
``attempt.py`` holds that attempt's state and the field rules, ``cached.py`` the
auth cache steps, ``rules.py`` the ``result_*`` rules and ``reply.py`` the reply."""

from proxyd.auth.chain.runner import ChainEntry, ChainResult, PassdbChain

__all__ = ["ChainEntry", "ChainResult", "PassdbChain"]
