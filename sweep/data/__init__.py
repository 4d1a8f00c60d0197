"""What a trial and a study are: frozen settings, study files, tasks and their batches, results."""
