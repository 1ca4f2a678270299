"""robustnb: code behind the *Robust networks at the edge* book.

Notebooks tell the story; this package does the work. Its layers, each importing only from those below
(checked by ``lint-imports``, contract in ``pyproject.toml``):

=================================  =====================================================================
**tools**
``robustnb.book``                  the book's tools: toc, shared cells and scaffold, page helpers, runtimes, Sphinx
``robustnb.bench``                 ``python -m robustnb.bench``: wall time and memory per chapter
``robustnb.cli``                   ``python -m robustnb reproduce <chapter>``: a chapter's claims table without Jupyter
``robustnb.__main__``              ``python -m robustnb``: runs ``robustnb.cli``
``robustnb.ledger``                the claims ledger at a glance: verdict counts per paper, forest plots
**chapters**
``robustnb.chapters``              one module per notebook: config, experiments, verdicts, figures
``robustnb.mechanisms``            ``make(kind, name, ...)``: everything chosen by name, built from its registry
**mechanisms** (one concept each)
``robustnb.distributed``           training and tuning ensemble nodes, locally or on Ray
``robustnb.defenses``              input defenses against entropy attacks (disentangled TV, baselines)
``robustnb.attacks``               standard, entropy, adaptive, transfer and noise attacks
``robustnb.split``                 split models with an entropy model, their rate, the cached zoo
``robustnb.compression``           L1 pruning, distillation, int8 quantization
``robustnb.domains``               source/target domains (Office-31 or the CIFAR-10 stand-in)
``robustnb.ensembles``             votes and data shards
``robustnb.corruptions``           natural corruptions (noise, blur, weather, digital)
``robustnb.signal``                FFT filters, spectra, the torch TV solver
**training**
``robustnb.train``                 the one training loop, predict, the one accuracy
``robustnb.jobs``                  independent trainings as jobs, in this process or as Ray tasks
``robustnb.cache``                 the on-disk cache: keys, the atomic verified writer, cached models
``robustnb.archive``               one archive of trained models and results (``python -m robustnb cache export``)
**data and models**
``robustnb.data``                  CIFAR-10, Fashion-MNIST and Office-31 loaders
``robustnb.models``                classifiers adapted to small inputs (registered by name)
**foundation**
``robustnb.cpus``                  usable CPUs and the OpenMP set-up (run before torch loads)
``robustnb.config``                presets (smoke / cpu / full), device, seeding, folders, errors
``robustnb.registry``              the one registry of everything chosen by name
``robustnb.checks``                input checks: image batches and numeric settings
``robustnb.stats``                 95% intervals (bootstrap, paired, over seeds) and the verdict rule
``robustnb.progress``              progress lines for the terminal (``make book``), bars never in the pages
``robustnb.plots``                 plotly style and figure helpers (they only read frames and tensors)
``robustnb.widgets``               live ipywidgets explorers for Jupyter and Colab
=================================  =====================================================================
"""

__version__ = "0.1.0"

# before anything imports torch: OpenMP reads its wait policy and thread count once, when torch loads it
from robustnb import cpus as _cpus  # noqa: E402

_cpus.prepare()

from robustnb import plots as _plots  # noqa: E402,F401  (the book's plotly template and renderer)
from robustnb.config import Run, setup  # noqa: E402,F401
