"""Data sets: built-ins, arrays, image folders and MNIST IDX files, scaled to model space."""

from dgm.data.builtin_sets import BUILTINS
from dgm.data.dataset import DataSet, load_data
from dgm.data.scaling import Scaling

__all__ = ["BUILTINS", "DataSet", "Scaling", "load_data"]
