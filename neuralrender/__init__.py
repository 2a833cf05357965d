"""neuralrender: a 3D-aware neural rendering framework.

Importing the package is cheap and never imports an optional dependency.
"""

__version__ = "0.1.0"
