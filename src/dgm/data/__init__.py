"""Data sets: built-ins, arrays, image folders and MNIST IDX files, scaled to model space."""

from dgm.data.dataset import BUILTINS, DataSet, Scaling, load_data

__all__ = ["BUILTINS", "DataSet", "Scaling", "load_data"]
