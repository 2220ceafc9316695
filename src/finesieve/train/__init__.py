"""Training: the reference scorers now; fine-tuning (LoRA, QLoRA, full) plugs in beside them."""
