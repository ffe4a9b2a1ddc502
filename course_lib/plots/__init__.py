"""Plots, one module per notebook topic; every function returns the matplotlib Figure it drew."""
