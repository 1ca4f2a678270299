"""The book's tools, one module per job.

==========================  ==============================================================================
:mod:`robustnb.book.toc`        which files ``_toc.yml`` lists, its parts, the chapters, the repository
:mod:`robustnb.book.cells`      the cells every chapter shares (Colab, parameters, set-up, runtime box),
                                nbval's stored outputs
:mod:`robustnb.book.scaffold`   a new chapter, whole: notebook, module, tests, ``_toc.yml`` and runtimes entries
:mod:`robustnb.book.pages`      what chapters call: ``show_source``, ``glue``, ``record`` (claims for the prose)
:mod:`robustnb.book.claims`     the claims ledger page and the terminal summary
:mod:`robustnb.book.runtimes`   ``book/runtimes.json``: the measured runtimes and what the book renders from them
:mod:`robustnb.book.watching`   ``make book``'s progress line
:mod:`robustnb.book.sphinx_ext` the Sphinx extension (``_config.yml`` loads it as ``robustnb.book``)
==========================  ==============================================================================

``python -m robustnb.book [list | sync | ledger | summary [BUILD] | watch | nbval NB EXECUTED | new NAME TITLE
[--part CAPTION]]``.
"""

from robustnb.book.cells import COLAB_MARKER, NBVAL_TAG, colab_cell_source, store_checked_outputs, sync
from robustnb.book.claims import LEDGER, ledger_markdown, summary_report, write_ledger
from robustnb.book.pages import NOT_MEASURED, declared_claims, glue, record, show_source
from robustnb.book.sphinx_ext import execution_cache_path, setup
from robustnb.book.toc import ROOT, chapters, repository, toc_files, toc_parts
from robustnb.book.watching import watch

__all__ = ["COLAB_MARKER", "NBVAL_TAG", "colab_cell_source", "store_checked_outputs", "sync", "LEDGER",
           "ledger_markdown", "summary_report", "write_ledger", "NOT_MEASURED", "declared_claims", "glue", "record",
           "show_source", "execution_cache_path", "setup", "ROOT", "chapters",
           "repository", "toc_files", "toc_parts", "watch"]
