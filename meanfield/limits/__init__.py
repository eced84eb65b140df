"""Infinite-width limits of the particle system (docs/theory/limits.md), each producing a Dataset with the
same variable names as a finite-width run (``loss``, ``f_train``, ``f_eval``, ``density`` ...).

Modules: ``kernel`` (linear regime: arc-cosine kernels and the kernel gradient flow),
``mean_field`` (critical regime: transport + reaction PDE for balanced 1-D inputs with bias),
``wang_ma`` (reduced ODE and closed forms of arXiv 2305.12467), ``boursier`` (orthogonal-input
predictions of arXiv 2206.00939), ``condensed`` (extremal vectors and escape times).
"""
