"""One module per chapter of the book, named exactly like its notebook (``book/<name>.ipynb``).

Each holds that chapter's config (``from_preset``), its experiments (functions returning tidy frames), its
verdicts, figure builders and explorers, and nothing another chapter needs: shared pieces live in the
mechanism modules below. No chapter module imports another one (checked by ``lint-imports``).
"""
