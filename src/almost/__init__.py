"""almost: align a language model with synthetic feedback (ALMoST, Kim et al., EMNLP 2023)."""

__version__ = "0.1.0"
