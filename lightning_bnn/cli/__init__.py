"""The command line.

LightningCLI's ``fit``/``validate``/``test``/``predict`` (:mod:`.app`) and the project's own
commands (:mod:`.commands`: ``runs``, ``compare``; :mod:`.sweep`; ``prune``).
"""
