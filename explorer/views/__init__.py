"""One package per view: ``view.py`` (Qt) draws, ``jobs.py`` (plain functions, no Qt) computes in the background."""
