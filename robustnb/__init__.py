"""robustnb: code behind the *Robust networks at the edge* book.

Notebooks tell the story; this package does the work. One module per concept:

========================  ==========================================================
``robustnb.config``       presets (smoke / cpu / full), device, seeding, folders
``robustnb.data``         CIFAR-10, Fashion-MNIST and Office-31 loaders
``robustnb.models``       classifiers adapted to small inputs
``robustnb.train``        the one training / evaluation loop and the model cache
``robustnb.attacks``      attack registry (torchattacks) and the attacks no library ships
``robustnb.corruptions``  natural corruptions (noise, blur, weather, digital)
``robustnb.plots``        plotly style and figure helpers (they only read tidy frames)
``robustnb.widgets``      live ipywidgets explorers for Jupyter and Colab
``robustnb.bench``        ``python -m robustnb.bench``: wall time and memory per chapter
========================  ==========================================================
"""

__version__ = "0.1.0"

from robustnb.config import Run, setup  # noqa: E402,F401
