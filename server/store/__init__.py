"""The model store: the catalogue of a model repository (folders, configs, load failures)
and each loaded model's weights and sessions."""
