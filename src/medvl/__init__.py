"""medvl: build medical multimodal instruction data, train LLaVA-style medical VLMs, evaluate them."""

__version__ = "0.1.0"
