"""The evaluation protocols, by their older import path: everything lives in :mod:`eval.suites`
(one module per suite, the shared data and metric code in :mod:`eval.suites.scoring`).

    from eval.suites import make_suite
    suite = make_suite("long", samples_per_rep=64)
    rows = suite.rows(data, rep=0)
"""
from eval.suites import *  # noqa: F401,F403
from eval.suites import __all__  # noqa: F401
