"""The training wing: strict loading, the embedded sample, CV and fitting, metrics, the model card."""
