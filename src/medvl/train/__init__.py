"""Three-stage training of a ``LlavaForConditionalGeneration`` on medvl's exports (or any LLaVA JSON).

``config`` (YAML + stage presets), ``data`` (readers), ``tokenize`` (chat template, loss mask, truncation),
``packing`` (soft packing), ``features`` (frozen-tower feature cache), ``trainer`` (transformers ``Trainer``
glue: per-module learning rates, LoRA, metrics) and ``run`` (stages in order, resumable). torch and
transformers are imported only by the modules that need them."""
