"""Studies: what the model's density, the samplers and the fine-tuning recipes do, on training-split prompts."""
