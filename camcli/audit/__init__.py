"""`camcli audit`: checks of the explanations themselves, beyond one image's map."""
