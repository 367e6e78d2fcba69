"""Planning with trained world models: tasks from env metadata, planning problems (the learned
model or the true simulator), the model-predictive-control policy and ``lejepa plan``
(docs/control.md)."""
