"""The cascade: rules, pre-filter and fine-tuned model composed, with thresholds fitted to a traffic budget."""
