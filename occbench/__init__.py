"""occbench: occluded-face synthesis and recognition benchmarking."""

__version__ = "0.4.2"
