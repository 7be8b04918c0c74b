"""turndiff: self-supervised low-dose CT reconstruction with TurnDiff."""

__version__ = "0.1.0"
