"""JSQA: live, reference-free speech quality (MOS) prediction."""

__version__ = "0.1.0"
