"""One trial from its settings to its result: base model, adapters, optimizer, training, child process."""
