"""Interactive widgets, one module per notebook topic (``welcome``, ``formats``, ``affine``, ...).

Widgets use only the ipywidgets API common to versions 7.7 (Colab) and 8, and each exposes its
update function so that tests can drive it without a browser.
"""
